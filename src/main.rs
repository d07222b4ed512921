//! The `nas-pipe` binary: argument parsing lives in [`nas_pipe::cli`].

fn main() {
    std::process::exit(nas_pipe::cli::main());
}
