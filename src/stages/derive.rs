//! The derive stage: the discrete architecture a run retrains, written to `genotype.ron`:
//! read off the DARTS-family search's last architecture weights, the best evaluation of a
//! multi-trial search, or the pipeline's fixed `genotype`.

use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::run::Resolved;
use crate::run::RunDir;
use crate::run::checkpoint;
use crate::run::hash::search_hash;
use crate::run::search::State;
use crate::space::genotype::{self, Genotype};
use crate::spec::pipeline::Search;

/// The derive stage after a search: reads the architecture weights after the last epoch
/// from `<run_dir>/search/state.json` (the search must be complete), derives the genotype
/// with the space's rules and writes it to `<run_dir>/genotype.ron`.
///
/// The history holds the softmax of the weights as `f32`, which JSON stores exactly, so
/// this derives the same genotype as the network's own weights would.
pub fn from_darts(p: &Resolved, run_dir: &Path) -> Result<Genotype> {
    let Some(Search::Darts { epochs, .. }) = p.spec.search.as_deref() else {
        return Err(Error::Input(format!(
            "pipeline \"{}\" has no `search` section to derive a genotype from",
            p.spec.name.value
        )));
    };
    let dir = RunDir::new(run_dir).search();
    let path = RunDir::new(run_dir).search_state();
    crate::run::outputs::verify(run_dir, std::slice::from_ref(&path))?;
    let advice = checkpoint::restart_advice("search", &dir);
    let epochs = epochs.value as usize;
    let state = checkpoint::read_state::<State>(
        &path,
        &search_hash(p)?,
        "search",
        epochs,
        &advice,
    )?
    .filter(|s| s.epochs_done == epochs)
    .ok_or_else(|| {
        Error::Input(format!(
            "{}: the search is not complete; run it first (`nas-pipe search` or `nas-pipe run`)",
            dir.display()
        ))
    })?;
    let last = state.history.last().ok_or_else(|| {
        Error::Input(format!(
            "{}: the search state has no architecture weights",
            RunDir::new(run_dir).search_state().display()
        ))
    })?;
    let space = &p.search_space;
    let mut cells: Vec<Option<Vec<Vec<f32>>>> = vec![None; space.cells.len()];
    for (name, w) in &last.cells {
        let i = space
            .cells
            .iter()
            .position(|c| &c.name == name)
            .ok_or_else(|| {
                Error::Input(format!(
                    "{}: cell \"{name}\" is not in the space",
                    RunDir::new(run_dir).search_state().display()
                ))
            })?;
        cells[i] = Some(w.clone());
    }
    let genotype = genotype::derive(space, &cells, &last.layers);
    write_atomic(
        &RunDir::new(run_dir).genotype(),
        genotype.to_ron().as_bytes(),
    )?;
    Ok(genotype)
}

/// The derive stage after a multi-trial search: the returned architecture of the complete
/// record, written to `<run_dir>/genotype.ron`.
pub fn from_trials(p: &Resolved, run_dir: &Path) -> Result<crate::space::genotype::Genotype> {
    let path = RunDir::new(run_dir).trials();
    let s: crate::run::trials::State = crate::run::trials::kept(&RunDir::new(run_dir))
        .read(crate::run::trials::STATE_VERSION)?
        .filter(|s: &crate::run::trials::State| {
            s.spec_hash == search_hash(p).unwrap_or_default() && s.finished
        })
        .ok_or_else(|| {
            Error::Input(format!(
                "{}: the search is not complete; run it first (`nas-pipe search` or `nas-pipe run`)",
                path.display()
            ))
        })?;
    let b = s.best().ok_or_else(|| {
        Error::Input(format!("{}: no architecture was evaluated", path.display()))
    })?;
    let src = crate::spec::Source::from_text(&path, b.genotype.clone());
    let g: crate::space::genotype::Genotype = src.parse()?;
    write_atomic(&RunDir::new(run_dir).genotype(), g.to_ron().as_bytes())?;
    Ok(g)
}

/// The derive stage of a pipeline that fixes its architecture: writes the pipeline's
/// `genotype` to `<run_dir>/genotype.ron`.
pub fn fixed(p: &Resolved, run_dir: &Path) -> Result<crate::space::genotype::Genotype> {
    let (g, _) = p.genotype.as_ref().ok_or_else(|| {
        Error::Input(format!(
            "pipeline \"{}\" has neither `search` nor `genotype`: there is no architecture to \
             train; add one of them (or use `nas-pipe train --genotype G`)",
            p.spec.name.value
        ))
    })?;
    crate::fsutil::write_atomic(&RunDir::new(run_dir).genotype(), g.to_ron().as_bytes())?;
    Ok(g.clone())
}
