//! Which device tensors live on. The pipeline's `device: Auto | Cpu | Cuda(N)`, or the
//! `--device` flag, is resolved once, here, to a Candle device in this build on this
//! machine:
//!
//! - `Cpu` is the CPU.
//! - `Cuda(N)` is CUDA device N, or an error that says what is missing: CUDA support in this
//!   binary (`scripts/build-cuda.sh` builds it), the NVIDIA driver, the CUDA libraries
//!   (cuBLAS, cuRAND), a device with that ordinal, or kernels for its compute capability. It
//!   never falls back to the CPU.
//! - `Auto` is CUDA device 0 when this build has CUDA and that device works, else the CPU.
//!
//! Results are reproducible on the CPU; on CUDA, reductions and scatter-adds run in parallel
//! and may round differently from run to run.
//!
//! [`check`] owns `nas-pipe device-check`, which compares a device with the CPU.

pub use crate::spec::pipeline::Device as Choice;

/// Parses a `--device` value: `auto`, `cpu`, `cuda` (device 0) or `cuda:N`.
pub fn parse(s: &str) -> std::result::Result<Choice, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(Choice::Auto),
        "cpu" => Ok(Choice::Cpu),
        "cuda" => Ok(Choice::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<u32>().ok())
            .map(Choice::Cuda)
            .ok_or_else(|| format!("unknown device {s:?}: expected auto, cpu, cuda or cuda:N")),
    }
}

/// The Candle device for `choice`, or why it cannot be had here.
pub fn select(choice: Choice) -> std::result::Result<candle_core::Device, String> {
    match choice {
        Choice::Cpu => Ok(candle_core::Device::Cpu),
        Choice::Cuda(n) => cuda(n),
        Choice::Auto => Ok(cuda(0).unwrap_or(candle_core::Device::Cpu)),
    }
}

/// The name of a device in keys and file names: `cpu`, `cuda:0`.
pub fn name(device: &candle_core::Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// A description for people: `cpu (2 threads)`, `cuda:0 (NVIDIA H200, compute 9.0, 140 GB)`.
pub fn describe(device: &candle_core::Device) -> String {
    match device {
        candle_core::Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(d) => {
            let ctx = d.cuda_stream().context().clone();
            let gpu = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
            let cap = ctx
                .compute_capability()
                .map(|(a, b)| format!(", compute {a}.{b}"))
                .unwrap_or_default();
            let mem = ctx
                .total_mem()
                .map(|m| format!(", {:.0} GB", m as f64 / 1e9))
                .unwrap_or_default();
            format!("{} ({gpu}{cap}{mem})", name(device))
        }
        other => name(other),
    }
}

/// The devices the tests run on: the CPU, and CUDA device 0 when this build has CUDA and
/// the machine a working device (set `NAS_PIPE_TEST_CUDA=0` to leave it out).
pub fn test_devices() -> Vec<candle_core::Device> {
    // One CUDA device (context, stream, cuBLAS handle) for the whole process.
    static CUDA: std::sync::OnceLock<Option<candle_core::Device>> = std::sync::OnceLock::new();
    let cuda = CUDA.get_or_init(|| {
        (std::env::var("NAS_PIPE_TEST_CUDA").as_deref() != Ok("0"))
            .then(|| cuda(0).ok())
            .flatten()
    });
    std::iter::once(candle_core::Device::Cpu)
        .chain(cuda.clone())
        .collect()
}

/// The compute capability this binary's CUDA kernels are for (`CUDA_COMPUTE_CAP` when it
/// was built, as `90`), if it was recorded.
pub fn built_compute_cap() -> Option<&'static str> {
    option_env!("NAS_PIPE_CUDA_COMPUTE_CAP")
}

#[cfg(not(feature = "cuda"))]
fn cuda(n: u32) -> std::result::Result<candle_core::Device, String> {
    Err(format!(
        "Cuda({n}) asks for CUDA, but this build of nas-pipe has no CUDA support: build it \
         with scripts/build-cuda.sh (target/cuda/release/nas-pipe), or use `device: Cpu`"
    ))
}

#[cfg(feature = "cuda")]
fn cuda(n: u32) -> std::result::Result<candle_core::Device, String> {
    use candle_core::cuda_backend::cudarc;
    // SAFETY: each call only tries to open a shared library (dlopen) and closes it again.
    let (driver, libs) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            [
                (
                    "cuBLAS (libcublas.so.13)",
                    cudarc::cublas::sys::is_culib_present(),
                ),
                (
                    "cuBLASLt (libcublasLt.so.13)",
                    cudarc::cublaslt::sys::is_culib_present(),
                ),
                (
                    "cuRAND (libcurand.so.10)",
                    cudarc::curand::sys::is_culib_present(),
                ),
            ],
        )
    };
    if !driver {
        return Err(format!(
            "Cuda({n}): this machine has no NVIDIA driver (libcuda.so.1 cannot be loaded)"
        ));
    }
    let missing: Vec<&str> = libs.iter().filter(|(_, ok)| !ok).map(|(l, _)| *l).collect();
    if !missing.is_empty() {
        return Err(format!(
            "Cuda({n}): the CUDA 13 libraries {} cannot be loaded; put the `nvidia/cu13/lib` \
             folder of a CUDA 13 pip install (pip install nvidia-cublas nvidia-curand) on \
             LD_LIBRARY_PATH",
            missing.join(", ")
        ));
    }
    let count = cudarc::driver::CudaContext::device_count()
        .map_err(|e| format!("Cuda({n}): the NVIDIA driver does not start: {e}"))?;
    if i64::from(n) >= i64::from(count) {
        return Err(format!(
            "Cuda({n}): this machine has {count} CUDA device{}{}",
            if count == 1 { "" } else { "s" },
            if count > 0 {
                format!(" (Cuda(0) to Cuda({}))", count - 1)
            } else {
                String::new()
            }
        ));
    }
    let device = candle_core::Device::new_cuda(n as usize)
        .map_err(|e| format!("Cuda({n}): cannot start the device: {e}"))?;
    if let (candle_core::Device::Cuda(d), Some(built)) = (&device, built_compute_cap()) {
        let (major, minor) = d
            .cuda_stream()
            .context()
            .compute_capability()
            .map_err(|e| format!("Cuda({n}): {e}"))?;
        if format!("{major}{minor}") != built {
            return Err(format!(
                "Cuda({n}) has compute capability {major}.{minor}, but this binary's kernels \
                 are for {built} only: rebuild with CUDA_COMPUTE_CAP={major}{minor} \
                 scripts/build-cuda.sh"
            ));
        }
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_flags() {
        assert_eq!(parse("auto"), Ok(Choice::Auto));
        assert_eq!(parse("CPU"), Ok(Choice::Cpu));
        assert_eq!(parse("cuda"), Ok(Choice::Cuda(0)));
        assert_eq!(parse("cuda:3"), Ok(Choice::Cuda(3)));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.contains("expected auto, cpu, cuda or cuda:N"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn cpu_is_always_there_and_first() {
        assert!(select(Choice::Cpu).unwrap().is_cpu());
        assert!(test_devices()[0].is_cpu());
        assert_eq!(name(&candle_core::Device::Cpu), "cpu");
        assert!(describe(&candle_core::Device::Cpu).starts_with("cpu ("));
    }

    /// Without CUDA in the build, or without a GPU, asking for CUDA is an error that says
    /// which, and `Auto` is the CPU.
    #[test]
    fn cuda_without_a_gpu_is_an_error_and_auto_is_the_cpu() {
        if test_devices().len() > 1 {
            return; // a working GPU: nothing to check here
        }
        let e = select(Choice::Cuda(0)).unwrap_err();
        if cfg!(feature = "cuda") {
            // The driver, the libraries or the device: any of them, named.
            assert!(
                e.starts_with("Cuda(0): ") && !e.contains("no CUDA support"),
                "{e}"
            );
        } else {
            assert!(
                e.contains("no CUDA support") && e.contains("build-cuda.sh"),
                "{e}"
            );
        }
        assert!(select(Choice::Auto).unwrap().is_cpu());
    }
}
