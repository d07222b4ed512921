//! Records which GPU architecture a `cuda` build's kernels are for (`CUDA_COMPUTE_CAP`, which
//! candle-kernels compiles for), so that `device: Cuda(N)` can refuse a device it has no
//! kernels for with an error instead of failing at the first kernel launch.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some()
        && let Ok(cap) = std::env::var("CUDA_COMPUTE_CAP")
    {
        println!("cargo:rustc-env=NAS_PIPE_CUDA_COMPUTE_CAP={cap}");
    }
}
