//! `nas-pipe show`: prints a space's skeleton and cell DAGs, or one architecture in it, as
//! text or Graphviz DOT.

use std::path::{Path, PathBuf};

use super::common::{Kind, kind_of, print};
use crate::error::{Result, exit};
use crate::space::genotype::{Architecture, Genotype};
use crate::space::{self, Overrides, Space, show};
use crate::spec::Sources;

/// Print the network skeleton and the cell DAGs of a space (or of a pipeline's space at
/// its search size), as indented text or Graphviz DOT.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A search space or pipeline file.
    pub file: PathBuf,
    /// Print Graphviz DOT instead of text (render with `dot -Tsvg`).
    #[arg(long)]
    pub dot: bool,
    /// Show one architecture instead of the whole space: a genotype file, a published
    /// name (DARTS_V1, DARTS_V2), a DARTS `Genotype(normal=[...], ...)` string, or a
    /// NAS-Bench-201 `|op~0|+|op~0|op~1|+...` string.
    #[arg(long, value_name = "G")]
    pub genotype: Option<String>,
}

pub fn run(args: &Args) -> Result<i32> {
    let mut sources = Sources::default();
    let (space, fixed) = load(&mut sources, &args.file)?;
    let text = match (&args.genotype, fixed) {
        (Some(g), _) => {
            let (gsrc, genotype) = Genotype::from_arg(g, &space)?;
            let arch = genotype.resolve(&gsrc, &space)?;
            render(&space, Some(&arch), args.dot)
        }
        (None, Some((rspace, arch))) => render(&rspace, Some(&arch), args.dot),
        (None, None) => render(&space, None, args.dot),
    };
    print(&text)?;
    Ok(exit::OK)
}

/// The space a file declares (a pipeline's at its search size), and a pipeline's fixed
/// genotype in its retrained space.
fn load(sources: &mut Sources, file: &Path) -> Result<(Space, Option<(Space, Architecture)>)> {
    Ok(match kind_of(sources, file)? {
        Kind::Space => (
            space::load(sources, file, None, &Overrides::default())?,
            None,
        ),
        Kind::Pipeline => {
            let p = crate::pipeline::resolve::load(sources, file)?;
            let fixed = p.genotype.map(|(_, r)| (p.retrain_space.clone(), r));
            (p.search_space, fixed)
        }
    })
}

/// The space, or one architecture in it, as indented text or Graphviz DOT.
fn render(space: &Space, arch: Option<&Architecture>, dot: bool) -> String {
    match (arch, dot) {
        (_, true) => show::dot(space, arch),
        (Some(a), false) => show::text_arch(space, a),
        (None, false) => show::text(space),
    }
}
