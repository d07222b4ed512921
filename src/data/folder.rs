//! The image-folder source (`Data::ImageFolder`): lists a folder of class sub-folders, or
//! its `train/`, `val/` and `test/` trees, without decoding anything.
//!
//! Classes are the sub-folder names of the training tree, sorted (byte order). A class
//! folder holds image files (PNG, JPEG, BMP, WebP, GIF, by extension, any case) at any
//! depth (symbolic links to folders followed, each folder read once, so a link cycle ends);
//! hidden files and other files are ignored. An empty class folder is an error, and
//! so is a class of `val/` or `test/` that training does not have. Declared class names
//! (`class_names`) replace the sorted folder names and fix the label order; then every tree
//! (`train/`, `val/`, `test/`) must have exactly those class folders. Training images are
//! interleaved by class (first of each class, then second, ...); the other parts keep class
//! order. Everything is sorted, so the listing does not depend on the file system's order.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::data_err;
use super::decode::Item;
use super::listing::Listing;
use crate::error::Result;

/// The file extensions read as images (compared in lower case).
pub const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "webp", "gif"];

/// Lists an image folder: `dir/<class>/...`, or `dir/train/<class>/...` with optional
/// `dir/val/` and `dir/test/` laid out the same way. With `declared` class names, labels
/// index them and each tree's class folders must be exactly them.
pub fn list(dir: &Path, declared: Option<&[String]>) -> Result<Listing> {
    if !dir.is_dir() {
        return Err(data_err(
            dir,
            "no such directory (expected the image folder in it: one sub-folder of images \
             per class, or train/, val/ and test/ folders laid out that way)\n  = help: \
             docs/pipelines.md (\"Your own images\") shows the layout",
        ));
    }
    let train_dir = dir.join("train");
    if let Some(part) = ["val", "test"].iter().find(|p| dir.join(p).is_dir())
        && !train_dir.is_dir()
    {
        return Err(data_err(
            dir,
            format!(
                "has a {part}/ folder but no train/ folder: put the training classes' \
                 folders in train/ (or rename {part}/ if it is a class)"
            ),
        ));
    }
    if !train_dir.is_dir() {
        let (classes, per_class) = list_tree(dir, None, declared)?;
        return Ok(Listing {
            train: interleave(per_class),
            val: None,
            test: None,
            classes,
        });
    }
    let (classes, per_class) = list_tree(&train_dir, None, declared)?;
    let part = |name: &str| -> Result<Option<Vec<Item>>> {
        let d = dir.join(name);
        if !d.is_dir() {
            return Ok(None);
        }
        let (_, per_class) = list_tree(&d, Some(&classes), declared)?;
        Ok(Some(per_class.into_iter().flatten().collect()))
    };
    Ok(Listing {
        val: part("val")?,
        test: part("test")?,
        train: interleave(per_class),
        classes,
    })
}

/// The classes of one tree and their images, class by class (in label order). With
/// `declared`, the class folders must be exactly the declared names, which are the classes;
/// else with `known`, every class folder must be one of them and labels are their indices
/// in `known`.
fn list_tree(
    root: &Path,
    known: Option<&[String]>,
    declared: Option<&[String]>,
) -> Result<(Vec<String>, Vec<Vec<Item>>)> {
    let classes = class_folders(root)?;
    if let Some(names) = declared {
        check_declared(root, &classes, names)?;
        let per_class = names
            .iter()
            .enumerate()
            .map(|(label, name)| class_images(&root.join(name), label as u32))
            .collect::<Result<_>>()?;
        return Ok((names.to_vec(), per_class));
    }
    let mut per_class = Vec::with_capacity(classes.len());
    for name in &classes {
        let label = match known {
            None => per_class.len(),
            Some(k) => k.iter().position(|c| c == name).ok_or_else(|| {
                data_err(
                    &root.join(name),
                    format!(
                        "class {name:?} is not one of the training classes ({})",
                        k.join(", ")
                    ),
                )
            })?,
        };
        per_class.push(class_images(&root.join(name), label as u32)?);
    }
    Ok((classes, per_class))
}

/// Errors, naming the folder, when the class folders `found` under `root` are not exactly
/// the `declared` class names: a folder not declared first, then a name without a folder.
fn check_declared(root: &Path, found: &[String], declared: &[String]) -> Result<()> {
    if let Some(extra) = found.iter().find(|f| !declared.contains(f)) {
        return Err(data_err(
            &root.join(extra),
            format!(
                "class folder {extra:?} is not one of the declared `class_names` ({})\n  = \
                 help: add {extra:?} to the data's `class_names`, or move the folder out of {}",
                declared.join(", "),
                root.display()
            ),
        ));
    }
    if let Some(missing) = declared.iter().find(|d| !found.contains(d)) {
        return Err(data_err(
            root,
            format!(
                "no folder for class {missing:?} of the declared `class_names`: the class \
                 folders here are {}\n  = help: add the folder {missing}/ with its images, or \
                 remove {missing:?} from the data's `class_names`",
                found.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The class folders of a tree (its sub-folders but hidden ones), sorted; at least one.
fn class_folders(root: &Path) -> Result<Vec<String>> {
    let mut classes = Vec::new();
    for entry in read_dir(root)? {
        if entry.is_dir() && !hidden(&entry) {
            let name = entry
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| data_err(&entry, "a class folder's name is not UTF-8"))?;
            classes.push(name.to_string());
        }
    }
    classes.sort();
    if classes.is_empty() {
        return Err(data_err(
            root,
            "no class folders: put each class's images in a sub-folder named after the class",
        ));
    }
    Ok(classes)
}

/// The image files under one class folder, sorted by path. Errors if there are none. A
/// folder reached again through a symbolic link is listed once (the first path in sorted
/// order that reaches it), so a link cycle ends.
fn class_images(dir: &Path, label: u32) -> Result<Vec<Item>> {
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let real = std::fs::canonicalize(&d)
            .map_err(|e| data_err(&d, format!("cannot list the folder: {e}")))?;
        if !seen.insert(real) {
            continue;
        }
        let mut entries = read_dir(&d)?;
        entries.sort_by(|a, b| b.cmp(a));
        for entry in entries {
            if hidden(&entry) {
                continue;
            }
            if entry.is_dir() {
                stack.push(entry);
            } else if is_image(&entry) {
                files.push(entry);
            }
        }
    }
    if files.is_empty() {
        return Err(data_err(
            dir,
            format!(
                "empty class folder: no image files ({}) in it or below it",
                EXTENSIONS.join(", ")
            ),
        ));
    }
    files.sort();
    Ok(files
        .into_iter()
        .map(|path| Item {
            path,
            label,
            row: None,
        })
        .collect())
}

/// The entries of a directory, as paths; errors name it.
fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| data_err(dir, format!("cannot list the folder: {e}")))?;
    entries
        .map(|e| {
            e.map(|e| e.path())
                .map_err(|e| data_err(dir, format!("cannot list the folder: {e}")))
        })
        .collect()
}

fn hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Whether a file's extension is one of [`EXTENSIONS`].
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The first item of each class, then the second of each, ...: every prefix is balanced.
pub fn interleave(per_class: Vec<Vec<Item>>) -> Vec<Item> {
    let total = per_class.iter().map(Vec::len).sum();
    let mut iters: Vec<_> = per_class.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        for it in &mut iters {
            if let Some(item) = it.next() {
                out.push(item);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::TempDir;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn classes_are_sorted_folders_and_training_is_interleaved() {
        let d = TempDir::new("folder-list");
        for f in [
            "b/1.png",
            "b/2.JPG",
            "b/.hidden.png",
            "b/notes.txt",
            "a/x/3.webp",
        ] {
            touch(&d.0.join(f));
        }
        let l = list(&d.0, None).unwrap();
        assert_eq!(l.classes, vec!["a", "b"]);
        let names: Vec<_> = l
            .train
            .iter()
            .map(|i| (i.label, i.path.file_name().unwrap().to_str().unwrap()))
            .collect();
        assert_eq!(names, vec![(0, "3.webp"), (1, "1.png"), (1, "2.JPG")]);
        assert!(l.val.is_none() && l.test.is_none());
    }

    #[test]
    fn parts_use_the_training_classes() {
        let d = TempDir::new("folder-parts");
        for f in ["train/cat/1.png", "train/dog/1.png", "test/dog/9.png"] {
            touch(&d.0.join(f));
        }
        let l = list(&d.0, None).unwrap();
        assert_eq!(l.classes, vec!["cat", "dog"]);
        assert!(l.val.is_none());
        assert_eq!(l.test.as_ref().unwrap()[0].label, 1);
        std::fs::rename(d.0.join("train"), d.0.join("training")).unwrap();
        let e = list(&d.0, None).unwrap_err().to_string();
        assert!(e.contains("no train/ folder"), "{e}");
        std::fs::rename(d.0.join("training"), d.0.join("train")).unwrap();
        touch(&d.0.join("test/cow/1.png"));
        let e = list(&d.0, None).unwrap_err().to_string();
        assert!(
            e.contains("cow") && e.contains("not one of the training classes"),
            "{e}"
        );
    }

    /// Issue #18: declared class names fix the label order, and every tree must have
    /// exactly their folders; the errors name the folder.
    #[test]
    fn declared_names_order_the_labels_and_must_match_the_folders() {
        let d = TempDir::new("folder-declared");
        for f in [
            "train/cat/1.png",
            "train/dog/1.png",
            "test/cat/9.png",
            "test/dog/9.png",
        ] {
            touch(&d.0.join(f));
        }
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let l = list(&d.0, Some(&names(&["dog", "cat"]))).unwrap();
        assert_eq!(l.classes, ["dog", "cat"]);
        let labels = |items: &[Item]| {
            items
                .iter()
                .map(|i| {
                    (
                        i.label,
                        i.path.parent().unwrap().file_name().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(&l.train), [(0, "dog".into()), (1, "cat".into())]);
        assert_eq!(
            labels(l.test.as_deref().unwrap()),
            [(0, "dog".into()), (1, "cat".into())]
        );
        let e = list(&d.0, Some(&names(&["cat", "dog", "cow"])))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "{}: no folder for class \"cow\"",
                d.0.join("train").display()
            )) && e.contains("remove \"cow\" from the data's `class_names`"),
            "{e}"
        );
        let e = list(&d.0, Some(&names(&["cat", "cow"])))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "{}: class folder \"dog\" is not one",
                d.0.join("train/dog").display()
            )),
            "{e}"
        );
        // The test tree must have every declared class too.
        std::fs::remove_dir_all(d.0.join("test/dog")).unwrap();
        let e = list(&d.0, Some(&names(&["cat", "dog"])))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "{}: no folder for class \"dog\"",
                d.0.join("test").display()
            )),
            "{e}"
        );
    }

    #[test]
    fn folders_linked_again_are_listed_once() {
        let d = TempDir::new("folder-links");
        touch(&d.0.join("a/1.png"));
        touch(&d.0.join("a/sub/2.png"));
        std::os::unix::fs::symlink(".", d.0.join("a/again")).unwrap();
        std::os::unix::fs::symlink("sub", d.0.join("a/b-link")).unwrap();
        std::os::unix::fs::symlink("..", d.0.join("a/sub/up")).unwrap();
        // Two cycles: walked path by path, 2^40 folders before the links give out. The
        // listing runs on a thread so that a walk that does not end fails the test.
        let (tx, rx) = std::sync::mpsc::channel();
        let root = d.0.clone();
        std::thread::spawn(move || tx.send(list(&root, None)));
        let l = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("listing a folder with link cycles did not end in 20 s")
            .unwrap();
        let names: Vec<_> = l
            .train
            .iter()
            .map(|i| i.path.strip_prefix(&d.0).unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, vec!["a/1.png", "a/b-link/2.png"]);
    }

    #[test]
    fn empty_and_missing_folders_are_errors() {
        let d = TempDir::new("folder-empty");
        let e = list(&d.0.join("nope"), None).unwrap_err().to_string();
        assert!(e.contains("no such directory"), "{e}");
        let e = list(&d.0, None).unwrap_err().to_string();
        assert!(e.contains("no class folders"), "{e}");
        touch(&d.0.join("a/1.png"));
        std::fs::create_dir_all(d.0.join("b")).unwrap();
        touch(&d.0.join("b/readme.txt"));
        let e = list(&d.0, None).unwrap_err().to_string();
        assert!(e.contains("empty class folder") && e.contains("/b"), "{e}");
    }
}
