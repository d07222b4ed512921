//! The run folder (`exports/<name>/`): where stages meet. Every artifact path, the lock
//! file, the writer lock, checkpoints and the files more than one stage reads.

pub mod budget;
pub mod busy;
pub mod checkpoint;
pub mod dir;
pub mod hash;
pub mod lock;
pub mod metrics;
pub mod outputs;
pub mod profile;
pub mod resolved;
pub mod retrain;
pub mod sealed;
pub mod search;
pub mod stage;
pub mod trials;
pub mod validation;

pub use dir::{ModelDir, RunDir};
pub use resolved::Resolved;
pub use stage::{SPEC_FILE, STALE_DIR, Stage};

/// How advice in messages names the pipeline file (`nas-pipe run PIPELINE --force`); the
/// binary puts the file the command was given in its place ([`with_pipeline`]).
pub const PIPELINE: &str = "PIPELINE";

/// `message` with each `nas-pipe <command> PIPELINE` naming `file` instead (quoted for a
/// POSIX shell when it needs it).
pub fn with_pipeline(message: &str, file: &std::path::Path) -> String {
    let shown = file.display().to_string();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c);
    let arg = if !shown.is_empty() && shown.chars().all(plain) {
        shown
    } else {
        format!("'{}'", shown.replace('\'', r"'\''"))
    };
    let needle = format!(" {PIPELINE}");
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(&needle) {
        out.push_str(&rest[..i]);
        // Only inside a quoted command: `nas-pipe run PIPELINE --force`.
        let in_command = out
            .rsplit('`')
            .next()
            .is_some_and(|c| c.starts_with("nas-pipe "));
        out.push(' ');
        out.push_str(if in_command { &arg } else { PIPELINE });
        rest = &rest[i + needle.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn advice_names_the_pipeline_file() {
        let m = "damaged. `nas-pipe run PIPELINE --force` keeps it; PIPELINE stays here";
        assert_eq!(
            with_pipeline(m, Path::new("pipelines/a.ron")),
            "damaged. `nas-pipe run pipelines/a.ron --force` keeps it; PIPELINE stays here"
        );
        assert_eq!(
            with_pipeline(m, Path::new("my runs/it's.ron")),
            "damaged. `nas-pipe run 'my runs/it'\\''s.ron' --force` keeps it; PIPELINE stays here"
        );
    }
}
