//! The hashes that key cached work: of a pipeline's search inputs (recorded in the search
//! state, the trials record and the lock file), of its retraining inputs (recorded beside
//! the weights and in the exported model), and of length-prefixed parts.

use crate::error::{Error, Result};
use crate::run::Resolved;
use crate::space::genotype::Genotype;

/// A hash of everything that determines the search's result: the build's version, the
/// search, data, split and normalisation sections, the seed, and the text of the space and
/// its libraries.
pub fn search_hash(p: &Resolved) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    let search = ron::to_string(&p.spec.search).map_err(|e| Error::Input(e.to_string()))?;
    let data = ron::to_string(&(&p.spec.data, &p.spec.split, &p.spec.normalize))
        .map_err(|e| Error::Input(e.to_string()))?;
    h.update(search.as_bytes());
    h.update(data.as_bytes());
    h.update(p.data_key.as_bytes());
    h.update(&p.spec.seed.to_le_bytes());
    for text in &p.space_texts {
        h.update(&(text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    Ok(h.finalize().to_hex().to_string())
}

/// A hash of everything that determines the retraining's result: the build's version, the
/// retrain, data, split and normalisation sections, the seed, the space's text and the
/// genotype.
pub fn retrain_hash(p: &Resolved, genotype: &Genotype) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    let spec = ron::to_string(&(
        &p.spec.retrain,
        &p.spec.data,
        &p.spec.split,
        &p.spec.normalize,
    ))
    .map_err(|e| Error::Input(e.to_string()))?;
    h.update(spec.as_bytes());
    h.update(p.data_key.as_bytes());
    h.update(&p.spec.seed.to_le_bytes());
    for text in &p.space_texts {
        h.update(&(text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    h.update(genotype.to_ron().as_bytes());
    Ok(h.finalize().to_hex().to_string())
}

/// Hashes length-prefixed parts.
pub fn hash_parts(parts: &[&[u8]]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().to_hex().to_string()
}
