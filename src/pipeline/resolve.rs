//! The one validation step from a pipeline file to a [`Resolved`] one: the spec's values
//! checked, paths resolved, the space compiled at the search and retrain sizes, a fixed
//! genotype resolved, a benchmark table loaded and checked against the space.

use std::path::Path;

use crate::data::Described;
use crate::error::Result;
use crate::run::Resolved;
use crate::space::genotype::Genotype;
use crate::space::{self, Overrides, Space};
use crate::spec::pipeline::{self, Data, Evaluator, Pipeline, Search, Variant};
use crate::spec::{Sources, Span, Spanned};

/// Reads, checks and resolves a pipeline file.
pub fn load(sources: &mut Sources, path: &Path) -> Result<Resolved> {
    let (file, spec) = sources.load::<Pipeline>(path)?;
    resolve(sources, file, path, spec)
}

/// The one validation step from a parsed pipeline to a [`Resolved`] one.
pub fn resolve(sources: &mut Sources, file: u32, path: &Path, spec: Pipeline) -> Result<Resolved> {
    pipeline::check(sources, &spec)?;
    if let Data::Synthetic { test, .. } = spec.data.value {
        samples_fit(sources, &spec, test as usize)?;
    }
    let dir = path.parent().unwrap_or(Path::new(""));
    let space_path = dir.join(&spec.space.value);
    let data_dir = match &spec.data.value {
        Data::FashionMnist { dir: d, .. }
        | Data::Mnist { dir: d, .. }
        | Data::Cifar10 { dir: d, .. } => Some(dir.join(d)),
        Data::ImageFolder { .. } | Data::Csv { .. } | Data::Npy { .. } => Some(dir.to_path_buf()),
        Data::Synthetic { .. } => None,
    };
    let described = describe(sources, &spec, data_dir.as_deref())?;
    let input = described.input;
    let first_space_file = sources.files.len();
    let raw = space::read(sources, &space_path, Some(spec.space.span))?;
    let space_texts = sources.files[first_space_file..]
        .iter()
        .map(|f| f.text.clone())
        .collect();
    let (search_ch, search_layers) = match spec.search.as_deref() {
        Some(Search::Darts {
            channels, layers, ..
        }) => (channels.clone(), layers.clone()),
        Some(Search::Trials { evaluator, .. }) => match &evaluator.value {
            Evaluator::Train { recipe, .. } => (recipe.channels.clone(), recipe.layers.clone()),
            Evaluator::WeightSharing {
                channels, layers, ..
            } => (channels.clone(), layers.clone()),
            Evaluator::Tabular { .. } => (None, None),
        },
        None => (None, None),
    };
    let ov = |c: &Option<Spanned<u32>>, l: &Option<Spanned<u32>>| Overrides {
        input: Some(input),
        channels: c.as_ref().map(|c| (c.value, c.span)),
        layers: l.as_ref().map(|l| (l.value, l.span)),
    };
    let size_note = |e| data_size_note(sources, &spec, e);
    let search_space =
        space::compile(sources, &raw, &ov(&search_ch, &search_layers)).map_err(size_note)?;
    if let Some(Search::Darts { variant, .. }) = spec.search.as_deref()
        && let Variant::PcDarts { k, .. } = &variant.value
    {
        crate::nets::supernet::check_partial(&search_space, k.value as usize).map_err(|e| {
            let (span, m) = match e {
                crate::nets::supernet::PartialError::Space(m) => (variant.span, m),
                // A default `k` has no place in the file: point at the variant.
                crate::nets::supernet::PartialError::K(m) if k.span == Span::default() => {
                    (variant.span, m)
                }
                crate::nets::supernet::PartialError::K(m) => (k.span, m),
            };
            crate::error::Error::from(sources.diag(span, m))
        })?;
    }
    let (rc, rl) = spec
        .retrain
        .as_ref()
        .map_or((None, None), |r| (r.channels.clone(), r.layers.clone()));
    let retrain_space = space::compile(sources, &raw, &ov(&rc, &rl))
        .map_err(|e| data_size_note(sources, &spec, e))?;
    if let Some(r) = &spec.retrain
        && r.auxiliary_weight.value > 0.0
    {
        crate::nets::model::aux_position_in(&retrain_space).map_err(|m| {
            let mut d = sources.diag(r.auxiliary_weight.span, m);
            d.help = Some("set `auxiliary_weight: 0.0` for this space or input size".into());
            crate::error::Error::from(d)
        })?;
    }
    let genotype = match &spec.genotype {
        None => None,
        Some(g) => {
            let arg = if Path::new(&g.value).is_relative() && dir.join(&g.value).exists() {
                dir.join(&g.value).display().to_string()
            } else {
                g.value.clone()
            };
            let (gsrc, genotype) =
                Genotype::from_arg(&arg, &retrain_space).map_err(|e| match e {
                    crate::error::Error::Input(m) => sources.diag(g.span, m).into(),
                    other => other,
                })?;
            let resolved = genotype.resolve(&gsrc, &retrain_space)?;
            Some((genotype, resolved))
        }
    };
    let table = match spec.search.as_deref() {
        Some(Search::Trials { evaluator, .. }) => match &evaluator.value {
            Evaluator::Tabular {
                table,
                select,
                report,
            } => Some(load_table(
                sources,
                &dir.join(&table.value),
                table.span,
                [select, report],
                &search_space,
            )?),
            Evaluator::Train { .. } | Evaluator::WeightSharing { .. } => None,
        },
        _ => None,
    };
    Ok(Resolved {
        dir: dir.to_path_buf(),
        table,
        spec,
        file,
        space_path,
        data_dir,
        input,
        classes: described.classes,
        data_key: described.key,
        data_folder: None,
        search_space,
        retrain_space,
        genotype,
        space_texts,
        space_raw: raw,
    })
}

/// What the data gives ([`crate::data::describe`]); from the spec alone, touching no file,
/// when an image source declares its class names and no stage reads images. An error about
/// the files of a source that declares its class names says where they are declared.
fn describe(sources: &Sources, spec: &Pipeline, dir: Option<&Path>) -> Result<Described> {
    let declared = spec.data.class_names();
    if declared.is_some()
        && !crate::run::resolved::reads_images(spec)
        && let Some(d) = crate::data::declared(&spec.data)
    {
        return Ok(d);
    }
    crate::data::describe(&spec.data, dir).map_err(|e| match (e, declared) {
        (crate::error::Error::Data { path, message }, Some(names)) => {
            let at = sources.diag(names.span, "");
            crate::error::Error::Data {
                path,
                message: format!(
                    "{message}\n  = note: the data's class names are declared at {}:{}:{}",
                    at.file, at.line, at.col
                ),
            }
        }
        (e, _) => e,
    })
}

/// When the space cannot take an image source's input, adds where the size was set and
/// the ways out to the space's error.
fn data_size_note(
    sources: &Sources,
    spec: &Pipeline,
    e: crate::error::Error,
) -> crate::error::Error {
    let Some(image) = spec.data.image_options() else {
        return e;
    };
    let crate::error::Error::Spec(mut d) = e else {
        return e;
    };
    let at = sources.diag(image.size.span, "");
    let note = format!(
        "the input size {} is the data's `size` (set at {}:{}:{}); a larger size, or fewer \
         cells (`layers`), fits more reductions",
        image.size.value, at.file, at.line, at.col
    );
    d.help = Some(match d.help.take() {
        Some(h) => format!("{h}\n  = help: {note}"),
        None => note,
    });
    crate::error::Error::Spec(d)
}

/// Loads a tabular evaluator's table and checks it: the columns exist, and the space's
/// architectures are written the table's way (the first row's architecture is one of the
/// space's). Errors point at the value in the pipeline.
fn load_table(
    sources: &Sources,
    path: &Path,
    span: Span,
    columns: [&Spanned<String>; 2],
    space: &Space,
) -> Result<std::sync::Arc<crate::data::Table>> {
    let table = crate::data::Table::load(path).map_err(|e| match e {
        crate::error::Error::Input(m) => sources.diag(span, m).into(),
        other => other,
    })?;
    for c in columns {
        if table.column(&c.value).is_none() {
            return Err(sources
                .diag(
                    c.span,
                    format!(
                        "{} has no column {:?}; its columns are {}",
                        path.display(),
                        c.value,
                        table.columns.join(", ")
                    ),
                )
                .into());
        }
    }
    let first = table.arch(0).to_string();
    let src = crate::spec::Source::from_text(path, first.clone());
    let fits = crate::space::genotype::Genotype::from_nb201(&src, space)
        .and_then(|g| g.resolve(&src, space).map(|_| g))
        .ok()
        .and_then(|g| crate::space::genotype::nb201_string(space, &g));
    if fits.as_deref() != Some(first.as_str()) {
        return Err(sources
            .diag(
                span,
                format!(
                    "the table's architectures (first: {first}) are not NAS-Bench-201 strings of \
                     the space \"{}\"",
                    space.name
                ),
            )
            .into());
    }
    Ok(std::sync::Arc::new(table))
}

/// Errors, pointing at `samples` (or at `validate` when it is the default), when the
/// validate stage asks for more images than the `test` images the data set has.
pub fn samples_fit(sources: &Sources, spec: &Pipeline, test: usize) -> Result<()> {
    let Some(v) = &spec.validate else {
        return Ok(());
    };
    let n = v.samples.value as usize;
    if n <= test {
        return Ok(());
    }
    let span = if v.samples.span == Span::default() {
        v.span
    } else {
        v.samples.span
    };
    let mut d = sources.diag(
        span,
        format!("validation compares {n} images, but the test set has {test}"),
    );
    d.help = Some(format!("set `samples: {test}` or fewer"));
    Err(d.into())
}
