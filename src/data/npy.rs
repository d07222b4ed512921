//! The NumPy source (`Data::Npy`): image and label arrays in `.npy` files or `.npz`
//! archives, read with the `npyz` crate (and `zip` for archives).
//!
//! A path is a `.npy` file, or `archive.npz:name` for the array `name` of an archive
//! (`archive.npz` alone when it holds one array). Images are uint8 (0..=255) or float32
//! (0..=1, scaled by 255 and rounded: a value outside, or NaN, is an error naming the file
//! and the element), C order, shaped `[N, H, W]`, or `[N, H, W, C]` / `[N, C, H, W]` by the
//! layout with C = 1 or 3. Labels are `[N]` of any integer type, none negative, each below
//! the class count. Every image goes through [`super::decode::prepare`], so arrays of
//! another size or channel count are resized and converted exactly as image files are.
//! The bytes an array's header declares are checked against the file before anything is
//! allocated.

use std::io::Read;
use std::path::{Path, PathBuf};

use image::DynamicImage;
use npyz::{DType, Order, TypeChar};
use rayon::prelude::*;

use super::decode::Skipped;
use super::{Dataset, data_err};
use crate::error::Result;
use crate::spec::pipeline::{ImageOptions, Layout};
use crate::spec::space::Input;

/// The file of a path (`a.npz:x` → `a.npz`), for messages and keys.
pub fn file_of(base: &Path, spec: &str) -> PathBuf {
    base.join(split(spec).0)
}

/// `a.npz:x` → (`a.npz`, Some(`x`)); `a.npy` → (`a.npy`, None).
fn split(spec: &str) -> (&str, Option<&str>) {
    match spec.rsplit_once(':') {
        Some((file, name)) if file.to_ascii_lowercase().ends_with(".npz") => (file, Some(name)),
        _ => (spec, None),
    }
}

/// An array's shape, element type and bytes.
struct Array {
    /// What messages name: `a.npy` or `a.npz:x`.
    shown: PathBuf,
    shape: Vec<u64>,
    kind: (TypeChar, u64),
    bytes: Vec<u8>,
}

/// Reads one array, checked: C order, a plain numeric type, and as many bytes as the header
/// declares (before they are allocated).
fn read_array(base: &Path, spec: &str) -> Result<Array> {
    let (file, name) = split(spec);
    let path = base.join(file);
    super::regular_file(&path, "array file")?;
    let f = std::fs::File::open(&path)
        .map_err(|e| data_err(&path, format!("cannot open the array file: {e}")))?;
    if name.is_some() || file.to_ascii_lowercase().ends_with(".npz") {
        return read_npz_member(f, &path, name);
    }
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    read_npy(std::io::BufReader::new(f), path, len)
}

/// One array of an `.npz` archive; `None`: the only one.
fn read_npz_member(f: std::fs::File, path: &Path, name: Option<&str>) -> Result<Array> {
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| data_err(path, format!("not a readable .npz (zip) archive: {e}")))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok())
        .map(|n| n.trim_end_matches(".npy").to_string())
        .collect();
    let name = match name {
        Some(n) => n.to_string(),
        None if names.len() == 1 => names[0].clone(),
        None => {
            return Err(data_err(
                path,
                format!(
                    "the archive holds {} arrays ({}); name one as `{}:NAME`",
                    names.len(),
                    names.join(", "),
                    path.display()
                ),
            ));
        }
    };
    let shown = PathBuf::from(format!("{}:{name}", path.display()));
    let member = zip.by_name(&format!("{name}.npy")).map_err(|_| {
        data_err(
            &shown,
            format!(
                "no array {name:?} in the archive; it holds {}",
                names.join(", ")
            ),
        )
    })?;
    let len = member.size();
    read_npy(member, shown, len)
}

/// A reader that counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Reads a `.npy` stream of `len` bytes in all.
fn read_npy(r: impl Read, shown: PathBuf, len: u64) -> Result<Array> {
    let mut r = Counting { inner: r, read: 0 };
    let header = npyz::NpyHeader::from_reader(&mut r)
        .map_err(|e| data_err(&shown, format!("not a readable .npy array: {e}")))?;
    // The data bytes left after the header.
    let len = len.saturating_sub(r.read);
    let DType::Plain(ty) = header.dtype() else {
        return Err(data_err(
            &shown,
            "a structured array; expected plain numbers",
        ));
    };
    if header.order() == Order::Fortran {
        return Err(data_err(
            &shown,
            "a Fortran-order array; save it in C order (numpy.ascontiguousarray)",
        ));
    }
    let shape = header.shape().to_vec();
    let need = shape
        .iter()
        .try_fold(ty.size_field(), |a, &d| a.checked_mul(d))
        .filter(|&n| n <= len)
        .ok_or_else(|| {
            data_err(
                &shown,
                format!(
                    "the header declares {shape:?} of {ty}, more than the {len} data bytes \
                     the file holds"
                ),
            )
        })?;
    let mut bytes = Vec::with_capacity(need as usize);
    r.take(need)
        .read_to_end(&mut bytes)
        .map_err(|e| data_err(&shown, format!("cannot read the array: {e}")))?;
    if (bytes.len() as u64) < need {
        return Err(data_err(
            &shown,
            format!("truncated: {} of {need} data bytes", bytes.len()),
        ));
    }
    if ty.endianness() == npyz::Endianness::Big && ty.size_field() > 1 {
        for chunk in bytes.chunks_exact_mut(ty.size_field() as usize) {
            chunk.reverse();
        }
    }
    Ok(Array {
        shown,
        shape,
        kind: (ty.type_char(), ty.size_field()),
        bytes,
    })
}

/// The arrays of an `Npy` source, as the spec names them (relative to `base`).
#[derive(Debug, Clone, Copy)]
pub struct Paths<'a> {
    pub base: &'a Path,
    pub images: &'a str,
    pub labels: &'a str,
    pub test: Option<(&'a str, &'a str)>,
    pub layout: Layout,
    /// Class names given in the spec.
    pub classes: Option<&'a [String]>,
}

impl Paths<'_> {
    /// The files read, for the data's key.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v = vec![
            file_of(self.base, self.images),
            file_of(self.base, self.labels),
        ];
        if let Some((i, l)) = self.test {
            v.push(file_of(self.base, i));
            v.push(file_of(self.base, l));
        }
        v
    }
}

/// The class names: the spec's, else `"0"` to the largest training label. Reads the label
/// arrays only.
pub fn classes(p: &Paths) -> Result<Vec<String>> {
    if let Some(c) = p.classes {
        return Ok(c.to_vec());
    }
    let a = read_array(p.base, p.labels)?;
    let labels = labels_of(&a, None)?;
    let max = labels
        .iter()
        .copied()
        .max()
        .ok_or_else(|| data_err(&a.shown, "no labels: the array is empty"))?;
    Ok((0..=max).map(|c| c.to_string()).collect())
}

/// One part of an `Npy` source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `images` and `labels`.
    Train,
    /// `test_images` and `test_labels`.
    Test,
}

/// Reads one part with `classes.len()` classes. An element that cannot be used (a label out
/// of range, a float32 pixel outside 0..=1) is an error naming the file and the element,
/// or, with `skip_unreadable`, left out and listed in the returned [`Skipped`]s.
pub fn read_part(
    p: &Paths,
    part: Part,
    opts: &ImageOptions,
    classes: &[String],
) -> Result<(Dataset, Vec<Skipped>)> {
    let (images, labels, name) = match (part, p.test) {
        (Part::Train, _) => (p.images, p.labels, "train"),
        (Part::Test, Some((i, l))) => (i, l, "test"),
        (Part::Test, None) => {
            return Err(crate::error::Error::Input(
                "the Npy data set has no test pair (test_images, test_labels)".into(),
            ));
        }
    };
    read_pair(p, images, labels, opts, classes.len() as u32, name)
}

/// One (images, labels) pair as a data set, with the elements left out.
fn read_pair(
    p: &Paths,
    images: &str,
    labels: &str,
    opts: &ImageOptions,
    classes: u32,
    part: &str,
) -> Result<(Dataset, Vec<Skipped>)> {
    let l = read_array(p.base, labels)?;
    let values = label_values(&l)?;
    if !opts.skip_unreadable {
        for (i, &v) in values.iter().enumerate() {
            label(v, i, Some(classes)).map_err(|m| data_err(&l.shown, m))?;
        }
    }
    let a = read_array(p.base, images)?;
    let (n, c, h, w) = image_shape(&a, p.layout)?;
    if n != values.len() {
        return Err(data_err(
            &a.shown,
            format!(
                "{n} images, but {} has {} labels",
                l.shown.display(),
                values.len()
            ),
        ));
    }
    check_pixel_type(&a)?;
    let per = c * h * w;
    let mut keep = Vec::with_capacity(n);
    let mut kept_labels = Vec::with_capacity(n);
    let mut skipped = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        let usable = label(v, i, Some(classes))
            .map_err(|m| (&l.shown, m))
            .and_then(|lab| pixel_fault(&a, i, per).map_or(Ok(lab), |m| Err((&a.shown, m))));
        match usable {
            Ok(lab) => {
                keep.push(i);
                kept_labels.push(lab);
            }
            Err((file, reason)) if opts.skip_unreadable => skipped.push(Skipped {
                path: file.clone(),
                row: None,
                index: Some(i),
                reason,
            }),
            Err((file, reason)) => return Err(data_err(file, reason)),
        }
    }
    let pixels: Vec<u8> = keep
        .into_par_iter()
        .flat_map_iter(|i| {
            let img = image_at(&image_u8(&a, i, per), c, h, w, p.layout);
            super::decode::prepare(img, opts)
        })
        .collect();
    let input = Input {
        channels: opts.channels.value,
        size: opts.size.value,
        classes,
    };
    let data = Dataset::new(format!("npy {part}"), input, pixels, kept_labels)?;
    Ok((data, skipped))
}

/// `[N]` integer labels, none negative and each below `classes` when given.
fn labels_of(a: &Array, classes: Option<u32>) -> Result<Vec<u32>> {
    label_values(a)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| label(v, i, classes).map_err(|m| data_err(&a.shown, m)))
        .collect()
}

/// The label `v` at `i`, or why it is not one: negative, or not below `classes`.
fn label(v: i128, i: usize, classes: Option<u32>) -> std::result::Result<u32, String> {
    match u32::try_from(v) {
        Ok(l) if classes.is_none_or(|c| l < c) => Ok(l),
        _ => Err(format!(
            "label {v} at index {i} is out of range{}",
            classes
                .map(|c| format!(": there are {c} classes (0..{c})"))
                .unwrap_or_default()
        )),
    }
}

/// The values of a `[N]` integer array.
fn label_values(a: &Array) -> Result<Vec<i128>> {
    if a.shape.len() != 1 {
        return Err(data_err(
            &a.shown,
            format!(
                "labels shaped {:?}; expected one dimension [N] (numpy: labels.reshape(-1))",
                a.shape
            ),
        ));
    }
    let size = a.kind.1 as usize;
    let signed = match a.kind.0 {
        TypeChar::Int => true,
        TypeChar::Uint => false,
        _ => {
            return Err(data_err(
                &a.shown,
                format!("labels of type {:?}{size}; expected integers", a.kind.0),
            ));
        }
    };
    if ![1, 2, 4, 8].contains(&size) {
        return Err(data_err(
            &a.shown,
            format!("{size}-byte integers are not read"),
        ));
    }
    Ok(a.bytes
        .chunks_exact(size)
        .map(|b| int_le(b, signed))
        .collect())
}

/// A little-endian integer of 1, 2, 4 or 8 bytes, as i128.
fn int_le(b: &[u8], signed: bool) -> i128 {
    let mut buf = [0u8; 16];
    buf[..b.len()].copy_from_slice(b);
    if signed && b[b.len() - 1] & 0x80 != 0 {
        buf[b.len()..].fill(0xff);
    }
    i128::from_le_bytes(buf)
}

/// (N, C, H, W) of an image array.
fn image_shape(a: &Array, layout: Layout) -> Result<(usize, usize, usize, usize)> {
    let s: Vec<usize> = a.shape.iter().map(|&d| d as usize).collect();
    let (n, c, h, w) = match (s.as_slice(), layout) {
        (&[n, h, w], _) => (n, 1, h, w),
        (&[n, h, w, c], Layout::Nhwc) => (n, c, h, w),
        (&[n, c, h, w], Layout::Nchw) => (n, c, h, w),
        _ => {
            return Err(data_err(
                &a.shown,
                format!(
                    "images shaped {:?}; expected [N, H, W] or {}",
                    a.shape,
                    match layout {
                        Layout::Nhwc => "[N, H, W, C] (layout: Nhwc)",
                        Layout::Nchw => "[N, C, H, W] (layout: Nchw)",
                    }
                ),
            ));
        }
    };
    if c != 1 && c != 3 {
        return Err(data_err(
            &a.shown,
            format!(
                "images shaped {:?} have {c} channels by layout {layout:?}; expected 1 or 3 \
                 (is the layout right?)",
                a.shape
            ),
        ));
    }
    if n == 0 || h == 0 || w == 0 {
        return Err(data_err(
            &a.shown,
            format!("no images: shaped {:?}", a.shape),
        ));
    }
    Ok((n, c, h, w))
}

/// Images are uint8 or float32.
fn check_pixel_type(a: &Array) -> Result<()> {
    match a.kind {
        (TypeChar::Uint, 1) | (TypeChar::Float, 4) => Ok(()),
        (t, size) => Err(data_err(
            &a.shown,
            format!("images of type {t:?}{size}; expected uint8 or float32"),
        )),
    }
}

/// The elements of image `i` (`per` of them) as f32 values, when float32.
fn floats(a: &Array, i: usize, per: usize) -> Option<impl Iterator<Item = f32> + '_> {
    (a.kind == (TypeChar::Float, 4)).then(|| {
        a.bytes[4 * i * per..4 * (i + 1) * per]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    })
}

/// Why image `i` of a float32 array cannot be used: its first element outside 0..=1 (NaN
/// included); `None` for a usable image, and always for uint8.
fn pixel_fault(a: &Array, i: usize, per: usize) -> Option<String> {
    let (j, v) = floats(a, i, per)?
        .enumerate()
        .find(|(_, v)| !(0.0..=1.0).contains(v))?;
    Some(format!(
        "float32 element {} is {v}; float32 images must be in 0..=1 \
         (divide by 255, or save them as uint8)",
        i * per + j
    ))
}

/// The pixels of image `i` as u8: uint8 as they are, float32 (checked by [`pixel_fault`])
/// times 255, rounded.
fn image_u8(a: &Array, i: usize, per: usize) -> Vec<u8> {
    match floats(a, i, per) {
        Some(f) => f.map(|v| (v * 255.0).round() as u8).collect(),
        None => a.bytes[i * per..(i + 1) * per].to_vec(),
    }
}

/// One image of `C×H×W` u8 values in the layout's axis order, as an image.
fn image_at(px: &[u8], c: usize, h: usize, w: usize, layout: Layout) -> DynamicImage {
    let (wu, hu) = (w as u32, h as u32);
    if c == 1 {
        let buf = image::GrayImage::from_raw(wu, hu, px.to_vec()).expect("h*w bytes");
        return DynamicImage::ImageLuma8(buf);
    }
    let hwc = match layout {
        Layout::Nhwc => px.to_vec(),
        Layout::Nchw => {
            let n = h * w;
            (0..n)
                .flat_map(|i| [px[i], px[n + i], px[2 * n + i]])
                .collect()
        }
    };
    DynamicImage::ImageRgb8(image::RgbImage::from_raw(wu, hu, hwc).expect("h*w*3 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::TempDir;

    fn npy<T: npyz::AutoSerialize + Copy>(shape: &[u64], data: &[T]) -> Vec<u8> {
        use npyz::WriterBuilder;
        let mut out = Vec::new();
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(shape)
            .writer(&mut out)
            .begin_nd()
            .unwrap();
        w.extend(data.iter().copied()).unwrap();
        w.finish().unwrap();
        out
    }

    #[test]
    fn labels_of_any_integer_type_and_their_range() {
        let d = TempDir::new("npy-labels");
        std::fs::write(d.0.join("a.npy"), npy(&[3], &[2i16, 0, 1])).unwrap();
        let a = read_array(&d.0, "a.npy").unwrap();
        assert_eq!(labels_of(&a, Some(3)).unwrap(), vec![2, 0, 1]);
        let e = labels_of(&a, Some(2)).unwrap_err().to_string();
        assert!(e.contains("label 2 at index 0 is out of range"), "{e}");
        std::fs::write(d.0.join("n.npy"), npy(&[2], &[1i64, -1])).unwrap();
        let e = labels_of(&read_array(&d.0, "n.npy").unwrap(), None).unwrap_err();
        assert!(e.to_string().contains("label -1 at index 1"), "{e}");
        std::fs::write(d.0.join("f.npy"), npy(&[2], &[1.0f32, 0.0])).unwrap();
        let e = labels_of(&read_array(&d.0, "f.npy").unwrap(), None).unwrap_err();
        assert!(e.to_string().contains("expected integers"), "{e}");
    }

    #[test]
    fn floats_must_lie_in_0_to_1() {
        let d = TempDir::new("npy-float");
        std::fs::write(
            d.0.join("x.npy"),
            npy(&[2, 1, 2], &[1.0f32, 0.5, 0.0, 0.25]),
        )
        .unwrap();
        let a = read_array(&d.0, "x.npy").unwrap();
        assert_eq!(pixel_fault(&a, 1, 2), None);
        assert_eq!(image_u8(&a, 0, 2), vec![255, 128]);
        assert_eq!(image_u8(&a, 1, 2), vec![0, 64]);
        std::fs::write(
            d.0.join("x.npy"),
            npy(&[2, 1, 2], &[0.0f32, 0.0, 0.5, 255.0]),
        )
        .unwrap();
        let a = read_array(&d.0, "x.npy").unwrap();
        assert_eq!(pixel_fault(&a, 0, 2), None);
        let e = pixel_fault(&a, 1, 2).unwrap();
        assert!(
            e.contains("element 3 is 255") && e.contains("divide by 255"),
            "{e}"
        );
    }

    #[test]
    fn a_header_larger_than_the_file_is_refused_before_allocating() {
        let d = TempDir::new("npy-huge");
        let mut bytes = npy(&[2, 2], &[1u8, 2, 3, 4]);
        // Same header length: 9 × 2 bytes declared, 4 there.
        let key = b"'shape': (";
        let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
        assert_eq!(bytes[at], b'2');
        bytes[at] = b'9';
        std::fs::write(d.0.join("x.npy"), &bytes).unwrap();
        let e = read_array(&d.0, "x.npy").err().unwrap().to_string();
        assert!(
            e.contains("x.npy") && e.contains("more than the 4 data bytes"),
            "{e}"
        );
        std::fs::write(d.0.join("t.npy"), &npy(&[4], &[1u8, 2, 3, 4])[..130]).unwrap();
        let e = read_array(&d.0, "t.npy").err().unwrap().to_string();
        assert!(e.contains("t.npy"), "{e}");
    }

    #[test]
    fn npz_members_by_name_or_alone() {
        let d = TempDir::new("npz");
        let f = std::fs::File::create(d.0.join("a.npz")).unwrap();
        let mut zip = zip::ZipWriter::new(f);
        let o = zip::write::SimpleFileOptions::default();
        zip.start_file("x.npy", o).unwrap();
        std::io::Write::write_all(&mut zip, &npy(&[2], &[7u8, 8])).unwrap();
        zip.finish().unwrap();
        assert_eq!(read_array(&d.0, "a.npz:x").unwrap().bytes, vec![7, 8]);
        assert_eq!(read_array(&d.0, "a.npz").unwrap().bytes, vec![7, 8]);
        let e = read_array(&d.0, "a.npz:y").err().unwrap().to_string();
        assert!(e.contains("no array \"y\"") && e.contains("holds x"), "{e}");
    }

    #[test]
    fn layouts_and_shapes() {
        let arr = |shape: &[u64]| Array {
            shown: "x.npy".into(),
            shape: shape.to_vec(),
            kind: (TypeChar::Uint, 1),
            bytes: Vec::new(),
        };
        assert_eq!(
            image_shape(&arr(&[5, 4, 3]), Layout::Nhwc).unwrap(),
            (5, 1, 4, 3)
        );
        assert_eq!(
            image_shape(&arr(&[5, 4, 3, 3]), Layout::Nhwc).unwrap(),
            (5, 3, 4, 3)
        );
        assert_eq!(
            image_shape(&arr(&[5, 3, 4, 2]), Layout::Nchw).unwrap(),
            (5, 3, 4, 2)
        );
        let e = image_shape(&arr(&[5, 4, 3, 3]), Layout::Nchw)
            .unwrap_err()
            .to_string();
        assert!(e.contains("4 channels") && e.contains("layout"), "{e}");
        assert!(image_shape(&arr(&[5]), Layout::Nhwc).is_err());
        // NCHW planes become the same image as NHWC pixels.
        let hwc = [1, 2, 3, 4, 5, 6];
        let chw = [1, 4, 2, 5, 3, 6];
        let a = image_at(&hwc, 3, 1, 2, Layout::Nhwc);
        let b = image_at(&chw, 3, 1, 2, Layout::Nchw);
        assert_eq!(a, b);
    }
}
