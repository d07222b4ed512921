//! `nas-pipe man`: the man pages, generated from the same clap definitions the binary
//! parses with.

use std::path::PathBuf;

use clap::CommandFactory as _;

use crate::error::{Error, Result, exit};

/// Print the nas-pipe(1) man page (roff) to stdout, or, with --out, write it and one page
/// per command (nas-pipe-run.1, ...) into a folder.
///
/// `nas-pipe man | man -l -` reads it; `nas-pipe man --out ~/.local/share/man/man1`
/// installs the pages for `man nas-pipe`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder to write nas-pipe.1 and a page per command into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<i32> {
    let cmd = super::Cli::command();
    match &args.out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .map_err(|source| io_err(PathBuf::from("<stdout>"), source))?;
            super::common::print(&String::from_utf8_lossy(&page))?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| io_err(dir.clone(), source))?;
            clap_mangen::generate_to(cmd, dir).map_err(|source| io_err(dir.clone(), source))?;
            super::common::print(&format!("man pages written to {}\n", dir.display()))?;
        }
    }
    Ok(exit::OK)
}

fn io_err(path: PathBuf, source: std::io::Error) -> Error {
    Error::Io { path, source }
}
