//! Finding the ONNX Runtime shared library and checking its version, before `ort` loads it.
//!
//! The search order is fixed and documented in the README:
//!
//! 1. an explicit path (`--ort-lib`);
//! 2. the `ORT_DYLIB_PATH` environment variable;
//! 3. the `onnxruntime` Python package in a project-local `.venv/` (the current directory or
//!    one above it), then the one `python3` imports: its `capi/` folder holds the library;
//! 4. the system library path (`libonnxruntime.so` through the dynamic loader).
//!
//! An explicit path (1 or 2) that fails ends the search: the user named that library, so
//! falling back to another one would hide the mistake.

use std::ffi::CStr;
use std::fmt;
use std::path::{Path, PathBuf};

/// The pip command that installs the ONNX Runtime nas-pipe is tested with.
pub const INSTALL_HINT: &str = "pip install onnxruntime==1.32.0";

/// Where a candidate library came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The `--ort-lib` flag.
    Flag,
    /// The `ORT_DYLIB_PATH` environment variable.
    EnvVar,
    /// The `onnxruntime` package of a virtual environment (the `.venv` folder).
    Venv(PathBuf),
    /// The `onnxruntime` package `python3` imports.
    Python,
    /// The dynamic loader's search path.
    System,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("--ort-lib"),
            Source::EnvVar => f.write_str("ORT_DYLIB_PATH"),
            Source::Venv(dir) => write!(f, "the onnxruntime package in {}", dir.display()),
            Source::Python => f.write_str("the onnxruntime package python3 imports"),
            Source::System => f.write_str("the system library path"),
        }
    }
}

/// What the search looks at. [`Search::from_process`] fills it from the command line, the
/// environment and the current directory; tests build it by hand.
#[derive(Debug, Clone)]
pub struct Search {
    /// `--ort-lib`, if given.
    pub flag: Option<PathBuf>,
    /// `ORT_DYLIB_PATH`, if set and not empty.
    pub env_var: Option<PathBuf>,
    /// Existing `.venv` folders, nearest first.
    pub venvs: Vec<PathBuf>,
    /// The name the dynamic loader is asked for last.
    pub system_name: PathBuf,
}

impl Search {
    /// The search for this process: `flag`, `ORT_DYLIB_PATH`, the `.venv` folders in the
    /// current directory and its ancestors, and the platform's library name.
    pub fn from_process(flag: Option<&Path>) -> Search {
        let env_var = std::env::var_os("ORT_DYLIB_PATH")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let venvs = std::env::current_dir()
            .map(|cwd| {
                cwd.ancestors()
                    .map(|d| d.join(".venv"))
                    .filter(|v| v.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        Search {
            flag: flag.map(absolute),
            env_var: env_var.map(|p| absolute(&p)),
            venvs,
            system_name: PathBuf::from(format!(
                "{}onnxruntime{}",
                std::env::consts::DLL_PREFIX,
                std::env::consts::DLL_SUFFIX
            )),
        }
    }
}

/// One place the search looked, and what happened there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub source: Source,
    /// The library file tried, if the source led to one.
    pub path: Option<PathBuf>,
    /// Why it was not used.
    pub outcome: String,
}

/// The library that loaded, with what the loader returned.
#[derive(Debug)]
pub struct Found<T> {
    pub value: T,
    pub source: Source,
    pub path: PathBuf,
}

/// Tries the candidates of `search` in order and returns the first that `load` accepts,
/// or every attempt when none does. `python` is asked for the `onnxruntime` package folder
/// only when the sources before it failed.
pub fn first_loadable<T>(
    search: &Search,
    python: impl FnOnce() -> Result<PathBuf, String>,
    mut load: impl FnMut(&Path) -> Result<T, String>,
) -> Result<Found<T>, Vec<Attempt>> {
    let mut attempts = Vec::new();
    let mut try_file = |source: Source, path: PathBuf, attempts: &mut Vec<Attempt>| {
        let outcome = if path.is_file() {
            match load(&path) {
                Ok(value) => {
                    return Some(Found {
                        value,
                        source,
                        path,
                    });
                }
                Err(e) => e,
            }
        } else {
            "no such file".to_string()
        };
        attempts.push(Attempt {
            source,
            path: Some(path),
            outcome,
        });
        None
    };

    let explicit = match (&search.flag, &search.env_var) {
        (Some(p), _) => Some((Source::Flag, p)),
        (None, Some(p)) => Some((Source::EnvVar, p)),
        (None, None) => None,
    };
    if let Some((source, path)) = explicit {
        let Some(lib) = explicit_library(path) else {
            attempts.push(Attempt {
                source,
                path: Some(path.clone()),
                outcome: "a folder with no ONNX Runtime library in it; name the library file \
                          (libonnxruntime.so.*) or the folder that holds it"
                    .into(),
            });
            return Err(attempts);
        };
        return try_file(source, lib, &mut attempts).ok_or(attempts);
    }

    if search.venvs.is_empty() {
        attempts.push(Attempt {
            source: Source::Venv(PathBuf::from(".venv")),
            path: None,
            outcome: "no .venv folder in the current folder or above".into(),
        });
    }
    for venv in &search.venvs {
        let source = Source::Venv(venv.clone());
        match venv_capi(venv).and_then(|capi| library_in(&capi)) {
            Some(lib) => {
                if let Some(found) = try_file(source, lib, &mut attempts) {
                    return Ok(found);
                }
            }
            None => attempts.push(Attempt {
                source,
                path: None,
                outcome: "no onnxruntime package with a library in it".into(),
            }),
        }
    }

    match python() {
        Ok(package) => match library_in(&package.join("capi")) {
            Some(lib) => {
                if let Some(found) = try_file(Source::Python, lib, &mut attempts) {
                    return Ok(found);
                }
            }
            None => attempts.push(Attempt {
                source: Source::Python,
                path: None,
                outcome: format!("no library in {}", package.join("capi").display()),
            }),
        },
        Err(e) => attempts.push(Attempt {
            source: Source::Python,
            path: None,
            outcome: e,
        }),
    }

    // A bare name: the dynamic loader searches its path (LD_LIBRARY_PATH, ld.so.cache).
    match load(&search.system_name) {
        Ok(value) => Ok(Found {
            value,
            source: Source::System,
            path: search.system_name.clone(),
        }),
        Err(e) => {
            attempts.push(Attempt {
                source: Source::System,
                path: Some(search.system_name.clone()),
                outcome: e,
            });
            Err(attempts)
        }
    }
}

/// The message for a search that found nothing: every attempt, then how to install.
pub fn not_found_message(attempts: &[Attempt]) -> String {
    let mut m = String::from("cannot load ONNX Runtime; tried:\n");
    for a in attempts {
        match &a.path {
            Some(p) => m += &format!("  {} ({}): {}\n", a.source, p.display(), a.outcome),
            None => m += &format!("  {}: {}\n", a.source, a.outcome),
        }
    }
    m += &format!(
        "install it with `{INSTALL_HINT}` (scripts/test.sh puts it in .venv/), \
         or pass --ort-lib PATH or set ORT_DYLIB_PATH to libonnxruntime.so"
    );
    m
}

/// The `onnxruntime/capi` folder of a virtual environment, if it has one.
fn venv_capi(venv: &Path) -> Option<PathBuf> {
    for lib in ["lib", "lib64", "Lib"] {
        let Ok(entries) = std::fs::read_dir(venv.join(lib)) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        // `lib/python3.X/site-packages` on Unix, `Lib/site-packages` on Windows.
        dirs.push(venv.join(lib));
        for d in dirs {
            let capi = d.join("site-packages").join("onnxruntime").join("capi");
            if capi.is_dir() {
                return Some(capi);
            }
        }
    }
    None
}

/// The library an explicit path (`--ort-lib`, `ORT_DYLIB_PATH`) names: the path itself,
/// or for a folder the library in it or in its `capi/` (`None` when it holds none).
pub fn explicit_library(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        library_in(path).or_else(|| library_in(&path.join("capi")))
    } else {
        Some(path.to_path_buf())
    }
}

/// The ONNX Runtime library in a folder: `libonnxruntime.so[.VERSION]`,
/// `libonnxruntime[.VERSION].dylib` or `onnxruntime.dll` (first by name).
pub fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut libs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with("libonnxruntime.so")
                || (name.starts_with("libonnxruntime.") && name.ends_with(".dylib"))
                || name == "onnxruntime.dll"
        })
        .collect();
    libs.sort();
    libs.into_iter().next()
}

/// Asks `python3` where its `onnxruntime` package is.
pub fn python_package() -> Result<PathBuf, String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty());
        return Err(format!("python3: {}", last.unwrap_or("failed").trim()));
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if dir.is_empty() {
        return Err("python3 printed no package folder".into());
    }
    Ok(PathBuf::from(dir))
}

/// The lowest ONNX Runtime minor version (1.x) the `ort` build accepts: its C API version.
pub const MIN_MINOR: u32 = ort::MINOR_VERSION;

/// Checks a version string (`1.32.0`) against [`MIN_MINOR`].
pub fn check_version(version: &str) -> Result<(), String> {
    let mut parts = version.trim().split('.');
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    match (major, minor) {
        (Some(1), Some(minor)) if minor >= MIN_MINOR => Ok(()),
        (Some(_), Some(_)) => Err(format!(
            "ONNX Runtime {version} is not supported: nas-pipe needs 1.{MIN_MINOR} or newer \
             (C API version {MIN_MINOR})"
        )),
        _ => Err(format!("unreadable ONNX Runtime version {version:?}")),
    }
}

/// Opens a library file and reads its ONNX Runtime version string, without initialising
/// ONNX Runtime. Fails for a file that is not a loadable ONNX Runtime library.
pub fn probe_version(path: &Path) -> Result<String, String> {
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: loading a library runs its initialisers; this is the library about to be
    // used for inference, whose initialisers are those ONNX Runtime always runs.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| chain(&e))?;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release.
    let get: libloading::Symbol<GetApiBase> = unsafe { lib.get(b"OrtGetApiBase") }
        .map_err(|_| "does not export OrtGetApiBase: not an ONNX Runtime library".to_string())?;
    // SAFETY: the library is loaded for the duration of this function; `OrtGetApiBase`
    // returns a pointer to a static struct, and `GetVersionString` a static C string.
    let version = unsafe {
        let base = get();
        if base.is_null() {
            return Err("OrtGetApiBase returned null".into());
        }
        let s = ((*base).GetVersionString)();
        if s.is_null() {
            return Err("GetVersionString returned null".into());
        }
        CStr::from_ptr(s).to_string_lossy().into_owned()
    };
    Ok(version)
}

/// An error and its sources, `outer: inner: ...` (libloading keeps the loader's message in
/// the source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(inner) = next {
        let m = inner.to_string();
        if !s.contains(&m) {
            s += ": ";
            s += &m;
        }
        next = inner.source();
    }
    s
}

/// `path` made absolute against the current directory (left as is when that fails).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> crate::fsutil::TempDir {
        crate::fsutil::TempDir::new(&format!("locate-{name}"))
    }

    /// A fake `.venv` whose onnxruntime package holds a (non-library) library file.
    fn fake_venv(root: &Path) -> (PathBuf, PathBuf) {
        let venv = root.join(".venv");
        let capi = venv.join("lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        std::fs::write(capi.join("libonnxruntime_providers_shared.so"), b"x").unwrap();
        let lib = capi.join("libonnxruntime.so.1.32.0");
        std::fs::write(&lib, b"x").unwrap();
        (venv, lib)
    }

    fn search(flag: Option<PathBuf>, env_var: Option<PathBuf>, venvs: Vec<PathBuf>) -> Search {
        Search {
            flag,
            env_var,
            venvs,
            system_name: PathBuf::from("libonnxruntime.so"),
        }
    }

    #[test]
    fn everything_is_tried_in_order_when_nothing_loads() {
        let root = tempdir("order");
        let (venv, lib) = fake_venv(&root);
        let py = root.join("py/onnxruntime");
        std::fs::create_dir_all(py.join("capi")).unwrap();
        std::fs::write(py.join("capi/libonnxruntime.so.1.31.0"), b"x").unwrap();
        let empty_venv = root.join("empty/.venv");
        std::fs::create_dir_all(&empty_venv).unwrap();
        let mut tried = Vec::new();
        let s = search(None, None, vec![venv.clone(), empty_venv.clone()]);
        let err = first_loadable(
            &s,
            || Ok(py.clone()),
            |p| -> Result<(), String> {
                tried.push(p.to_path_buf());
                Err("refused".into())
            },
        )
        .unwrap_err();
        let py_lib = py.join("capi/libonnxruntime.so.1.31.0");
        let system = PathBuf::from("libonnxruntime.so");
        assert_eq!(tried, vec![lib.clone(), py_lib.clone(), system.clone()]);
        let sources: Vec<Source> = err.iter().map(|a| a.source.clone()).collect();
        assert_eq!(
            sources,
            vec![
                Source::Venv(venv),
                Source::Venv(empty_venv),
                Source::Python,
                Source::System
            ]
        );
        assert_eq!(err[1].path, None);
        let m = not_found_message(&err);
        assert!(m.starts_with("cannot load ONNX Runtime; tried:\n"), "{m}");
        assert!(m.contains(&format!("({}): refused", lib.display())), "{m}");
        assert!(
            m.contains("no onnxruntime package with a library in it"),
            "{m}"
        );
        assert!(m.contains("pip install onnxruntime==1.32.0"), "{m}");
    }

    #[test]
    fn the_first_library_that_loads_wins_and_python_is_not_asked() {
        let root = tempdir("venv-wins");
        let (venv, lib) = fake_venv(&root);
        let s = search(None, None, vec![venv.clone()]);
        let found = first_loadable(
            &s,
            || panic!("python must not be asked once a library loaded"),
            |p| Ok(p.to_path_buf()),
        )
        .unwrap();
        assert_eq!(found.path, lib);
        assert_eq!(found.value, lib);
        assert_eq!(found.source, Source::Venv(venv));
    }

    #[test]
    fn the_flag_comes_first_and_its_failure_ends_the_search() {
        let root = tempdir("flag");
        let (venv, _) = fake_venv(&root);
        let flag = root.join("missing/libonnxruntime.so");
        let env = root
            .join(".venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0");
        let s = search(Some(flag.clone()), Some(env), vec![venv]);
        let mut tried = 0;
        let err = first_loadable(
            &s,
            || panic!("python must not be asked after an explicit path"),
            |_| -> Result<(), String> {
                tried += 1;
                Ok(())
            },
        )
        .unwrap_err();
        assert_eq!(tried, 0);
        assert_eq!(
            err,
            vec![Attempt {
                source: Source::Flag,
                path: Some(flag.clone()),
                outcome: "no such file".into()
            }]
        );
        assert!(
            not_found_message(&err)
                .contains(&format!("  --ort-lib ({}): no such file\n", flag.display()))
        );
    }

    /// `--ort-lib DIR` finds the library in the folder (or its `capi/`); a folder without
    /// one is said to be one.
    #[test]
    fn a_flag_naming_a_folder_uses_the_library_in_it() {
        let root = tempdir("flag-dir");
        let (venv, lib) = fake_venv(&root);
        let capi = lib.parent().unwrap().to_path_buf();
        let package = capi.parent().unwrap().to_path_buf();
        for dir in [capi, package] {
            let s = search(Some(dir), None, vec![venv.clone()]);
            let found = first_loadable(&s, || panic!("no python"), |p| Ok(p.to_path_buf()));
            assert_eq!(found.unwrap().path, lib);
        }
        let s = search(Some(root.0.clone()), None, vec![]);
        let err = first_loadable(&s, || panic!("no python"), |_| Ok(())).unwrap_err();
        assert!(not_found_message(&err).contains("a folder with no ONNX Runtime library in it"));
    }

    #[test]
    fn the_environment_variable_comes_before_the_venv() {
        let root = tempdir("env");
        let (venv, lib) = fake_venv(&root);
        let other = root.join("other.so");
        std::fs::write(&other, b"x").unwrap();
        let s = search(None, Some(other.clone()), vec![venv]);
        let found = first_loadable(&s, || Err("unused".into()), |p| Ok(p.to_path_buf())).unwrap();
        assert_eq!((found.source, found.path), (Source::EnvVar, other));
        // A failing ORT_DYLIB_PATH is not skipped in favour of the venv's library.
        let err = first_loadable(
            &s,
            || Err("unused".into()),
            |p| {
                if p == lib {
                    Ok(())
                } else {
                    Err("bad".to_string())
                }
            },
        )
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].source, Source::EnvVar);
    }

    #[test]
    fn python_errors_are_reported() {
        let s = search(None, None, vec![]);
        let err = first_loadable(
            &s,
            || Err("python3: ModuleNotFoundError: No module named 'onnxruntime'".into()),
            |_| -> Result<(), String> {
                Err("libonnxruntime.so: cannot open shared object file".into())
            },
        )
        .unwrap_err();
        let m = not_found_message(&err);
        assert!(
            m.contains("  the onnxruntime package in .venv: no .venv folder in the current folder or above\n"),
            "{m}"
        );
        assert!(
            m.contains("  the onnxruntime package python3 imports: python3: ModuleNotFoundError"),
            "{m}"
        );
        assert!(
            m.contains(
                "  the system library path (libonnxruntime.so): libonnxruntime.so: cannot open"
            ),
            "{m}"
        );
    }

    #[test]
    fn library_names_are_recognised() {
        let d = tempdir("names");
        assert_eq!(library_in(&d), None);
        std::fs::write(d.join("libonnxruntime_providers_shared.so"), b"x").unwrap();
        assert_eq!(library_in(&d), None);
        std::fs::write(d.join("libonnxruntime.so.1.32.0"), b"x").unwrap();
        assert_eq!(library_in(&d), Some(d.join("libonnxruntime.so.1.32.0")));
    }

    #[test]
    fn versions_below_the_api_level_are_refused() {
        assert_eq!(check_version("1.32.0"), Ok(()));
        assert_eq!(check_version(&format!("1.{MIN_MINOR}.1")), Ok(()));
        assert_eq!(
            check_version("1.19.2").unwrap_err(),
            format!(
                "ONNX Runtime 1.19.2 is not supported: nas-pipe needs 1.{MIN_MINOR} or newer (C API version {MIN_MINOR})"
            )
        );
        assert!(check_version("2.0.0").is_err());
        assert_eq!(
            check_version("dev").unwrap_err(),
            "unreadable ONNX Runtime version \"dev\""
        );
    }

    #[test]
    fn probing_a_file_that_is_not_a_library_fails_cleanly() {
        let d = tempdir("probe");
        let f = d.join("libonnxruntime.so");
        std::fs::write(&f, b"not a library").unwrap();
        assert!(probe_version(&f).is_err());
    }
}
