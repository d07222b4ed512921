//! The entry points the hostile-input tests and the `cargo fuzz` targets (`fuzz/`) drive:
//! a spec text taken as far as `nas-pipe check` takes a file. Errors are the expected
//! outcome for most inputs; a panic, an abort or a hang is a bug.

use std::path::Path;

use crate::spec::pipeline::Pipeline;
use crate::spec::space::SearchSpace;
use crate::spec::{Source, Sources};

/// What a spec text is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pipeline,
    Space,
}

/// Parses and validates `text` as the file at `path` would be (includes and tables are
/// read relative to it), down to the counts and memory estimates `check` prints. Whether
/// it was accepted; never panics on any text.
pub fn check_text(path: &Path, text: String, kind: Kind) -> bool {
    let mut sources = Sources::default();
    let id = sources.add(Source::from_text(path, text));
    match kind {
        Kind::Pipeline => {
            let Ok(spec) = sources.parse::<Pipeline>(id) else {
                return false;
            };
            let Ok(p) = crate::pipeline::resolve::resolve(&mut sources, id, path, spec) else {
                return false;
            };
            let _ = crate::pipeline::memory::estimates(&p);
        }
        Kind::Space => {
            let Ok(raw) = sources.parse::<SearchSpace>(id) else {
                return false;
            };
            let Ok(raw) = crate::space::expand_includes(&mut sources, path, raw) else {
                return false;
            };
            let ov = crate::space::Overrides::default();
            let Ok(space) = crate::space::compile(&sources, &raw, &ov) else {
                return false;
            };
            let _ = (
                space.supernet_cost(),
                space.cost_range(),
                space.architectures(),
            );
        }
    }
    true
}
