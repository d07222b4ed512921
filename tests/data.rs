//! The image sources on real data: part of Debian's Fashion-MNIST written out as a PNG
//! folder, a CSV manifest and `.npy`/`.npz` arrays loads to exactly the IDX loader's
//! tensors; a colour JPEG set of mixed sizes is resized and converted; a tiny image folder
//! runs end to end and a replaced file makes `status` say the data changed; bad data exits
//! 2 naming the file.

use std::io::Write;
use std::path::{Path, PathBuf};

use nas_pipe::data::{self, Dataset};
use nas_pipe::spec::Spanned;
use nas_pipe::spec::pipeline::{Data, ImageOptions, Layout, Resize};

use crate::common::{bin, fails, root, run_ok, tempdir};

const FASHION: &str = "/usr/share/datasets/fashion-mnist";
const TRAIN: usize = 2000;
const TEST: usize = 500;

/// The first `TRAIN` training and `TEST` test images of Fashion-MNIST, or `None` (with a
/// note) when Debian's dataset-fashion-mnist is not installed.
fn fashion() -> Option<(Dataset, Dataset)> {
    if !Path::new(FASHION).is_dir() {
        eprintln!("skipped: {FASHION} is absent (apt-get install dataset-fashion-mnist)");
        return None;
    }
    let (train, test) = data::idx::load(Path::new(FASHION), "fashion-mnist").unwrap();
    Some((train.first(TRAIN), test.first(TEST)))
}

fn opts(size: u32, channels: u32) -> Spanned<ImageOptions> {
    Spanned::unspanned(ImageOptions {
        size: Spanned::unspanned(size),
        channels: Spanned::unspanned(channels),
        resize: Resize::Crop,
        limit: None,
        skip_unreadable: false,
        class_names: None,
    })
}

/// Writes image `i` of `d` as `<dir>/<label>/<i:05>.png`; returns its path relative to
/// `dir`.
fn write_png(d: &Dataset, i: usize, dir: &Path) -> String {
    let rel = format!("{}/{i:05}.png", d.label(i));
    let path = dir.join(&rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_raw(28, 28, d.image(i).to_vec())
        .unwrap()
        .save(&path)
        .unwrap();
    rel
}

/// `d`'s indices grouped by class (index order within a class), then taken from the
/// classes in turn: the order an image folder's training part has.
fn interleaved(d: &Dataset) -> Vec<usize> {
    let mut per: Vec<Vec<usize>> = vec![Vec::new(); 10];
    for i in 0..d.len() {
        per[d.label(i) as usize].push(i);
    }
    let mut out = Vec::new();
    for k in 0.. {
        let before = out.len();
        out.extend(per.iter().filter_map(|c| c.get(k)));
        if out.len() == before {
            break;
        }
    }
    out
}

/// `d`'s indices grouped by class: an image folder's test part.
fn by_class(d: &Dataset) -> Vec<usize> {
    let mut v: Vec<usize> = (0..d.len()).collect();
    v.sort_by_key(|&i| d.label(i));
    v
}

/// Asserts that `got` holds `want`'s images and labels in the order `order`.
fn assert_same(got: &Dataset, want: &Dataset, order: &[usize], what: &str) {
    assert_eq!(got.len(), order.len(), "{what}: count");
    assert_eq!(got.input().classes, 10, "{what}: classes");
    for (j, &i) in order.iter().enumerate() {
        assert_eq!(got.label(j), want.label(i), "{what}: label {j}");
        assert!(got.image(j) == want.image(i), "{what}: image {j} (IDX {i})");
    }
}

pub(crate) fn write_npy<T: npyz::AutoSerialize + Copy>(w: impl Write, shape: &[u64], data: &[T]) {
    use npyz::WriterBuilder;
    let mut out = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(w)
        .begin_nd()
        .unwrap();
    out.extend(data.iter().copied()).unwrap();
    out.finish().unwrap();
}

#[test]
fn image_folder_csv_and_npy_load_exactly_the_idx_tensors() {
    let Some((train, test)) = fashion() else {
        return;
    };
    let dir = tempdir("data-fashion");
    let mut rows = String::from("path,label\n");
    for i in 0..train.len() {
        let rel = write_png(&train, i, &dir.join("png/train"));
        rows += &format!("train/{rel},{}\n", train.label(i));
    }
    let mut test_rows = String::new();
    for i in 0..test.len() {
        let rel = write_png(&test, i, &dir.join("png/test"));
        test_rows += &format!("test/{rel},{}\n", test.label(i));
    }
    std::fs::write(dir.join("train.csv"), rows).unwrap();
    std::fs::write(dir.join("test.csv"), test_rows).unwrap();

    let folder = Data::ImageFolder {
        dir: "png".into(),
        image: opts(28, 1),
    };
    let s = data::read(&folder, Some(&dir), 0).unwrap();
    assert_eq!(
        s.classes,
        (0..10).map(|c| c.to_string()).collect::<Vec<_>>()
    );
    assert!(s.val.is_none());
    assert_same(&s.train, &train, &interleaved(&train), "folder train");
    assert_same(
        s.test.as_ref().unwrap(),
        &test,
        &by_class(&test),
        "folder test",
    );

    let csv = Data::Csv {
        file: "train.csv".into(),
        root: Some("png".into()),
        val: None,
        test: Some("test.csv".into()),
        image: opts(28, 1),
    };
    let s = data::read(&csv, Some(&dir), 0).unwrap();
    let all = |d: &Dataset| (0..d.len()).collect::<Vec<_>>();
    assert_same(&s.train, &train, &all(&train), "csv train");
    assert_same(s.test.as_ref().unwrap(), &test, &all(&test), "csv test");

    let n = |d: &Dataset| d.len() as u64;
    let labels = |d: &Dataset| d.labels().iter().map(|&l| l as u8).collect::<Vec<_>>();
    let f = std::fs::File::create(dir.join("x.npy")).unwrap();
    write_npy(f, &[n(&train), 28, 28], &train.images());
    let f = std::fs::File::create(dir.join("y.npy")).unwrap();
    write_npy(f, &[n(&train)], &labels(&train));
    // The test pair as float32 in 0..=1 and int64 labels, inside an .npz archive.
    let mut zip = zip::ZipWriter::new(std::fs::File::create(dir.join("t.npz")).unwrap());
    let o = zip::write::SimpleFileOptions::default();
    zip.start_file("x.npy", o).unwrap();
    let floats: Vec<f32> = test.images().iter().map(|&v| v as f32 / 255.0).collect();
    write_npy(&mut zip, &[n(&test), 28, 28, 1], &floats);
    zip.start_file("y.npy", o).unwrap();
    let longs: Vec<i64> = test.labels().iter().map(|&l| l as i64).collect();
    write_npy(&mut zip, &[n(&test)], &longs);
    zip.finish().unwrap();
    let npy = Data::Npy {
        images: "x.npy".into(),
        labels: "y.npy".into(),
        layout: Layout::Nhwc,
        test_images: Some("t.npz:x".into()),
        test_labels: Some("t.npz:y".into()),
        classes: None,
        image: opts(28, 1),
    };
    let s = data::read(&npy, Some(&dir), 0).unwrap();
    assert_same(&s.train, &train, &all(&train), "npy train");
    assert_same(s.test.as_ref().unwrap(), &test, &all(&test), "npz test");
}

/// Issue #18: declared class names fix the label order: the same folder read with the
/// names reversed gives the same images with the labels swapped, in the declared order.
#[test]
fn declared_class_names_order_the_labels() {
    let dir = tempdir("data-declared-order");
    for (name, c) in [("blue", [20, 40, 220]), ("red", [220, 30, 30])] {
        for k in 0..2 {
            let path = dir.join(format!("imgs/{name}/{k}.png"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            colour(8, 8, c).save(&path).unwrap();
        }
    }
    let read = |names: Option<&[&str]>| {
        let mut image = opts(8, 3);
        image.value.class_names =
            names.map(|n| Spanned::unspanned(n.iter().map(|s| s.to_string()).collect()));
        let d = Data::ImageFolder {
            dir: "imgs".into(),
            image,
        };
        data::read(&d, Some(&dir), 0).unwrap()
    };
    let sorted = read(None);
    let declared = read(Some(&["red", "blue"]));
    assert_eq!(sorted.classes, ["blue", "red"]);
    assert_eq!(declared.classes, ["red", "blue"]);
    // Training images come from the classes in turn, in label order.
    assert_eq!(sorted.train.labels(), &[0, 1, 0, 1]);
    assert_eq!(declared.train.labels(), &[0, 1, 0, 1]);
    let name = |s: &data::Source, i: usize| s.classes[s.train.label(i) as usize].clone();
    for i in 0..4 {
        let j = i ^ 1;
        assert_eq!(declared.train.image(i), sorted.train.image(j), "image {i}");
        assert_eq!(name(&declared, i), name(&sorted, j));
    }
}

/// Issue #18: an `Npy` source's `classes` is the older spelling of `class_names`: either
/// one names the classes, and reads the same tensors.
#[test]
fn npy_classes_and_class_names_read_the_same() {
    let dir = tempdir("data-npy-alias");
    let px: Vec<u8> = (0..4 * 16).map(|i| i as u8).collect();
    write_npy(
        std::fs::File::create(dir.join("x.npy")).unwrap(),
        &[4, 4, 4],
        &px,
    );
    write_npy(
        std::fs::File::create(dir.join("y.npy")).unwrap(),
        &[4],
        &[2u8, 0, 1, 2],
    );
    let names = || Spanned::unspanned(vec!["a".to_string(), "b".into(), "c".into()]);
    let source = |classes, image| Data::Npy {
        images: "x.npy".into(),
        labels: "y.npy".into(),
        layout: Layout::Nhwc,
        test_images: None,
        test_labels: None,
        classes,
        image,
    };
    let mut image = opts(4, 1);
    let old = data::read(&source(Some(names()), image.clone()), Some(&dir), 0).unwrap();
    image.value.class_names = Some(names());
    let new = data::read(&source(None, image), Some(&dir), 0).unwrap();
    assert_eq!(
        (&old.classes, &new.classes),
        (&names().value, &names().value)
    );
    assert_eq!(old.train.labels(), &[2, 0, 1, 2]);
    assert_eq!(new.train.labels(), old.train.labels());
    assert_eq!(new.train.images(), old.train.images());
    assert_eq!(&new.train.images()[..], &px[..]);
}

/// A colour image of `w`×`h` in one colour, with a 1-pixel black border.
fn colour(w: u32, h: u32, c: [u8; 3]) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let edge = x == 0 || y == 0 || x == w - 1 || y == h - 1;
        image::Rgb(if edge { [0, 0, 0] } else { c })
    })
}

#[test]
fn colour_jpegs_of_mixed_sizes_are_resized_and_converted() {
    let dir = tempdir("data-jpeg");
    let colours = [("blue", [20, 40, 220]), ("red", [220, 30, 30])];
    let sizes = [(40, 30), (64, 64), (100, 50), (17, 91)];
    for (name, c) in colours {
        for (k, (w, h)) in sizes.iter().enumerate() {
            let path = dir.join(format!("imgs/{name}/{k}.jpg"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            colour(*w, *h, c).save(&path).unwrap();
        }
    }
    let read = |channels, resize| {
        let mut image = opts(16, channels);
        image.value.resize = resize;
        let d = Data::ImageFolder {
            dir: "imgs".into(),
            image,
        };
        data::read(&d, Some(&dir), 0).unwrap()
    };
    for resize in [Resize::Crop, Resize::Stretch] {
        let s = read(3, resize);
        assert_eq!(s.classes, vec!["blue", "red"]);
        assert_eq!(s.train.len(), 8);
        assert_eq!(s.train.image_len(), 3 * 16 * 16);
        for i in 0..8 {
            let want = colours[s.train.label(i) as usize].1;
            let img = s.train.image(i);
            // The centre pixel of each plane, away from the border and JPEG's ringing.
            let centre = 8 * 16 + 8;
            for (p, &w) in want.iter().enumerate() {
                let got = img[p * 256 + centre] as i32;
                assert!(
                    (got - w as i32).abs() <= 12,
                    "{resize:?} image {i} plane {p}: {got} vs {w}"
                );
            }
        }
    }
    // Grayscale: BT.601 luma of the colour.
    let s = read(1, Resize::Crop);
    assert_eq!(s.train.image_len(), 256);
    let luma =
        |c: [u8; 3]| (0.299 * c[0] as f32 + 0.587 * c[1] as f32 + 0.114 * c[2] as f32) as i32;
    for i in 0..8 {
        let want = luma(colours[s.train.label(i) as usize].1);
        let got = s.train.image(i)[8 * 16 + 8] as i32;
        assert!((got - want).abs() <= 12, "gray image {i}: {got} vs {want}");
    }
}

/// A tiny image folder: `train/` 4 classes × 8 and `test/` 4 × 3 coloured 8×8 PNGs.
pub(crate) fn tiny_folder(dir: &Path) {
    let colours = [[250, 10, 10], [10, 250, 10], [10, 10, 250], [250, 250, 10]];
    for (part, n) in [("train", 8), ("test", 3)] {
        for (c, rgb) in colours.iter().enumerate() {
            for k in 0..n {
                let path = dir.join(format!("imgs/{part}/class{c}/{k}.png"));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let shade = (k * 3) as u8;
                image::RgbImage::from_pixel(8 + k as u32, 8, image::Rgb(rgb.map(|v| v - shade)))
                    .save(&path)
                    .unwrap();
            }
        }
    }
}

/// `pipelines/smoke.ron`'s settings on the tiny image folder (no ONNX Runtime stages).
fn tiny_pipeline(dir: &Path, image: &str) -> PathBuf {
    tiny_pipeline_as(dir, image, "tiny.ron")
}

/// [`tiny_pipeline`] in a file of another name.
pub(crate) fn tiny_pipeline_as(dir: &Path, image: &str, name: &str) -> PathBuf {
    let text = format!(
        r#"Pipeline(
    name: "tiny-images",
    device: Cpu,
    data: ImageFolder(dir: "imgs", image: ({image})),
    space: "{}",
    search: Darts(
        epochs: 1, batch_size: 16, channels: 4, layers: 3,
        weights: Sgd(lr: 0.025, lr_min: 0.001, weight_decay: 3e-4, grad_clip: 5.0),
        arch: Adam(lr: 3e-4, betas: (0.5, 0.999), weight_decay: 1e-3),
    ),
    retrain: Retrain(
        channels: 4, layers: 3, epochs: 1, batch_size: 16,
        optimizer: Sgd(lr: 0.025, weight_decay: 3e-4, grad_clip: 5.0),
    ),
    export: Onnx(),
)"#,
        root().join("schemas/darts.ron").display()
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_tiny_image_folder_runs_end_to_end_and_a_replaced_file_is_seen() {
    let dir = tempdir("data-e2e");
    tiny_folder(&dir);
    let file = tiny_pipeline(&dir, "size: 8, channels: 3");
    let out = dir.join("out");
    let check = run_ok(bin().arg("check").arg(&file));
    assert!(
        check.contains("input 3×8×8, 4 classes (class0, class1, class2, class3)"),
        "{check}"
    );
    run_ok(bin().arg("run").arg(&file).arg("--out").arg(&out));
    let run = out.join("tiny-images");
    assert!(run.join("model.onnx").is_file());
    assert_eq!(
        std::fs::read_to_string(run.join("data/skipped.json")).unwrap(),
        "[]\n"
    );
    let cached = std::fs::read_dir(run.join("data/cache")).unwrap().count();
    assert_eq!(cached, 4, "a .bin and a .json for train and for test");
    let status = |out: &Path| run_ok(bin().arg("status").arg(&file).arg("--out").arg(out));
    assert!(!status(&out).contains("data's files"), "{}", status(&out));
    // Same name and size, other pixels, a later modification time.
    std::thread::sleep(std::time::Duration::from_millis(20));
    image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
        .save(dir.join("imgs/train/class0/0.png"))
        .unwrap();
    let s = status(&out);
    assert!(s.contains("the data's files changed"), "{s}");
    // A single-stage command decodes into, and reads from, its run folder's cache too.
    let other = dir.join("other");
    run_ok(bin().arg("search").arg(&file).arg("--out").arg(&other));
    let cached = std::fs::read_dir(other.join("tiny-images/data/cache"))
        .unwrap()
        .count();
    assert_eq!(cached, 4, "nas-pipe search caches the parts it reads");
}

/// An `Npy` source with `skip_unreadable` leaves out the elements it cannot use (a label
/// out of range, a float32 image with a NaN or a value above 1), lists them by file and
/// element, and is read from the run folder's cache the second time; a rewritten array
/// is read again.
#[test]
fn npy_skips_unusable_elements_lists_them_and_is_cached() {
    let dir = tempdir("data-npy-skip");
    std::fs::create_dir_all(&dir).unwrap();
    let mut px = vec![0.25f32; 6 * 16];
    px[2 * 16 + 5] = f32::NAN;
    px[4 * 16] = 1.5;
    write_npy(
        std::fs::File::create(dir.join("x.npy")).unwrap(),
        &[6, 4, 4],
        &px,
    );
    write_npy(
        std::fs::File::create(dir.join("y.npy")).unwrap(),
        &[6],
        &[0i64, 1, 0, 7, 1, 0],
    );
    let mut image = opts(4, 1);
    image.value.skip_unreadable = true;
    let source = |image: Spanned<ImageOptions>| Data::Npy {
        images: "x.npy".into(),
        labels: "y.npy".into(),
        layout: Layout::Nhwc,
        test_images: None,
        test_labels: None,
        classes: Some(Spanned::unspanned(vec!["a".into(), "b".into()])),
        image,
    };
    let npy = source(image);
    let folder = dir.join("run/data");
    let read = data::ReadOptions {
        folder: Some(folder.clone()),
        progress: false,
    };
    let s = data::read_with(&npy, Some(&dir), 0, &read).unwrap();
    assert_eq!(s.train.labels(), &[0, 1, 0]);
    assert!(
        s.train.images().iter().all(|&p| p == 64),
        "0.25 × 255, rounded"
    );
    let skipped: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(folder.join("skipped.json")).unwrap())
            .unwrap();
    let listed: Vec<(String, u64, String)> = skipped
        .iter()
        .map(|v| {
            let file = Path::new(v["path"].as_str().unwrap());
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            (name, v["index"].as_u64().unwrap(), v["reason"].to_string())
        })
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(
        (listed[0].0.as_str(), listed[0].1),
        ("x.npy", 2),
        "{listed:?}"
    );
    assert!(listed[0].2.contains("NaN"), "{listed:?}");
    assert_eq!(
        (listed[1].0.as_str(), listed[1].1),
        ("y.npy", 3),
        "{listed:?}"
    );
    assert!(listed[1].2.contains("label 7 at index 3"), "{listed:?}");
    assert_eq!(
        (listed[2].0.as_str(), listed[2].1),
        ("x.npy", 4),
        "{listed:?}"
    );
    assert!(listed[2].2.contains("1.5"), "{listed:?}");

    let again = data::read_with(&npy, Some(&dir), 0, &read).unwrap();
    assert!(
        format!("{:?}", again.train).contains("mapped"),
        "{:?}",
        again.train
    );
    assert_eq!(again.train.images(), s.train.images());
    assert_eq!(again.train.labels(), s.train.labels());

    // Rewritten (another size, so another key whatever the clock): read again.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let px = vec![1.0f32; 7 * 16];
    write_npy(
        std::fs::File::create(dir.join("x.npy")).unwrap(),
        &[7, 4, 4],
        &px,
    );
    write_npy(
        std::fs::File::create(dir.join("y.npy")).unwrap(),
        &[7],
        &[1i64; 7],
    );
    let fresh = data::read_with(&npy, Some(&dir), 0, &read).unwrap();
    assert_eq!(fresh.train.len(), 7);
    assert!(fresh.train.images().iter().all(|&p| p == 255));
    assert_eq!(
        std::fs::read_to_string(folder.join("skipped.json")).unwrap(),
        "[]\n"
    );

    // Without skip_unreadable the first unusable element is the error.
    write_npy(
        std::fs::File::create(dir.join("x.npy")).unwrap(),
        &[7, 4, 4],
        &{
            let mut p = vec![0.5f32; 7 * 16];
            p[3 * 16 + 1] = -0.5;
            p
        },
    );
    let strict = source(opts(4, 1));
    let e = data::read_with(&strict, Some(&dir), 0, &read)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("x.npy") && e.contains("element 49 is -0.5"),
        "{e}"
    );
}

#[test]
fn bad_data_exits_2_naming_the_file() {
    let dir = tempdir("data-bad");
    tiny_folder(&dir);
    let file = tiny_pipeline(&dir, "size: 8, channels: 3");
    let out = dir.join("out");
    let run = |file: &Path| fails(bin().arg("run").arg(file).arg("--out").arg(&out));

    // A truncated image.
    let victim = dir.join("imgs/train/class1/2.png");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let e = run(&file);
    assert!(
        e.contains("class1/2.png") && e.contains("skip_unreadable"),
        "{e}"
    );
    // Skipped, listed in the run folder.
    let skip = tiny_pipeline_as(
        &dir,
        "size: 8, channels: 3, skip_unreadable: true",
        "skip.ron",
    );
    run_ok(bin().arg("run").arg(&skip).arg("--out").arg(&out));
    let listed = std::fs::read_to_string(out.join("tiny-images/data/skipped.json")).unwrap();
    assert!(listed.contains("class1/2.png"), "{listed}");
    let report = std::fs::read_to_string(out.join("tiny-images/report.md")).unwrap();
    assert!(report.contains("images skipped"), "{report}");
    std::fs::write(&victim, &bytes).unwrap();

    // An empty class folder.
    std::fs::create_dir_all(dir.join("imgs/train/class9")).unwrap();
    let e = fails(bin().arg("check").arg(&file));
    assert!(
        e.contains("class9") && e.contains("empty class folder"),
        "{e}"
    );
    std::fs::remove_dir(dir.join("imgs/train/class9")).unwrap();

    // A bad size, pointed at in the pipeline.
    let bad = tiny_pipeline_as(&dir, "size: 0, channels: 3", "zero.ron");
    let e = fails(bin().arg("check").arg(&bad));
    assert!(e.contains("zero.ron:4:") && e.contains("image size"), "{e}");

    // A CSV row naming a missing file; a label out of range in the test manifest.
    let csv = dir.join("m.csv");
    std::fs::write(&csv, "imgs/train/class0/0.png,0\nimgs/nope.png,1\n").unwrap();
    let text = std::fs::read_to_string(&file).unwrap().replace(
        r#"ImageFolder(dir: "imgs","#,
        r#"Csv(file: "m.csv", test: "t.csv","#,
    );
    let csv_pipe = dir.join("csv.ron");
    std::fs::write(&csv_pipe, text).unwrap();
    std::fs::write(dir.join("t.csv"), "imgs/test/class0/0.png,1\n").unwrap();
    let e = fails(bin().arg("check").arg(&csv_pipe));
    assert!(
        e.contains("nope.png") && e.contains("manifest row 2"),
        "{e}"
    );
    std::fs::write(
        &csv,
        "imgs/train/class0/0.png,0\nimgs/train/class1/0.png,1\n",
    )
    .unwrap();
    std::fs::write(dir.join("t.csv"), "imgs/test/class0/0.png,7\n").unwrap();
    let e = fails(bin().arg("check").arg(&csv_pipe));
    assert!(
        e.contains("t.csv") && e.contains("row 1") && e.contains("\"7\""),
        "{e}"
    );

    // An .npy of the wrong dtype, and of the wrong shape.
    let text = std::fs::read_to_string(&file).unwrap().replace(
        r#"ImageFolder(dir: "imgs","#,
        r#"Npy(images: "x.npy", labels: "y.npy", classes: ["a", "b"],"#,
    );
    let npy_pipe = dir.join("npy.ron");
    std::fs::write(&npy_pipe, text).unwrap();
    write_npy(
        std::fs::File::create(dir.join("y.npy")).unwrap(),
        &[2],
        &[0u8, 1],
    );
    write_npy(
        std::fs::File::create(dir.join("x.npy")).unwrap(),
        &[2, 8, 8],
        &[0.5f64; 128],
    );
    let e = run(&npy_pipe);
    assert!(
        e.contains("x.npy") && e.contains("expected uint8 or float32"),
        "{e}"
    );
    write_npy(
        std::fs::File::create(dir.join("x.npy")).unwrap(),
        &[2, 8, 8, 2],
        &[0u8; 256],
    );
    let e = run(&npy_pipe);
    assert!(e.contains("x.npy") && e.contains("2 channels"), "{e}");
    // A label out of range.
    write_npy(
        std::fs::File::create(dir.join("x.npy")).unwrap(),
        &[2, 8, 8],
        &[0u8; 128],
    );
    write_npy(
        std::fs::File::create(dir.join("y.npy")).unwrap(),
        &[2],
        &[0u8, 2],
    );
    let e = run(&npy_pipe);
    assert!(
        e.contains("y.npy") && e.contains("label 2 at index 1 is out of range"),
        "{e}"
    );
}

/// A built-in data set's files are part of the stage keys too: replacing one (same path)
/// changes the key; reading them again unchanged does not.
#[test]
fn a_replaced_idx_file_changes_the_data_key() {
    let dir = tempdir("data-idx-key");
    let idx = dir.join("fm");
    std::fs::create_dir_all(&idx).unwrap();
    let write = |name: &str, magic: u8, dims: &[u32], fill: u8| {
        let mut b = vec![0, 0, 8, magic];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        let n: u32 = dims.iter().product();
        b.extend(std::iter::repeat_n(fill, n as usize));
        std::fs::write(idx.join(name), b).unwrap();
    };
    write("train-images-idx3-ubyte", 3, &[20, 28, 28], 0);
    write("train-labels-idx1-ubyte", 1, &[20], 1);
    write("t10k-images-idx3-ubyte", 3, &[10, 28, 28], 0);
    write("t10k-labels-idx1-ubyte", 1, &[10], 1);
    let file = dir.join("p.ron");
    std::fs::write(
        &file,
        format!(
            r#"Pipeline(
    name: "idx-key",
    data: FashionMnist(dir: "fm"),
    space: "{}",
    genotype: "DARTS_V2",
    retrain: Retrain(channels: 4, layers: 3, epochs: 1, batch_size: 8,
        optimizer: Sgd(lr: 0.025, weight_decay: 3e-4, grad_clip: 5.0)),
)"#,
            root().join("schemas/darts.ron").display()
        ),
    )
    .unwrap();
    let key = || {
        let mut sources = nas_pipe::spec::Sources::default();
        nas_pipe::pipeline::resolve::load(&mut sources, &file)
            .unwrap()
            .data_key
    };
    let first = key();
    assert!(!first.is_empty());
    assert_eq!(key(), first);
    std::thread::sleep(std::time::Duration::from_millis(20));
    write("train-images-idx3-ubyte", 3, &[20, 28, 28], 7);
    assert_ne!(
        key(),
        first,
        "a replaced training file left the key as it was"
    );
}
