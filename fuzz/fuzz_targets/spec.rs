//! The spec parser and checks: the input, as UTF-8 text, is read as a pipeline and as a
//! search space (`pipeline::fuzz::check_text`, what `nas-pipe check` does). Every input
//! must be accepted or refused with an error: no panic, no abort, no hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nas_pipe::pipeline::fuzz::{Kind, check_text};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("fuzz/corpus/spec/input.ron");
        check_text(path, text.to_string(), Kind::Pipeline);
        check_text(path, text.to_string(), Kind::Space);
    }
});
