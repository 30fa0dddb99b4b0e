//! Which part of a pre-trained transformer fine-tuning updates, and where input noise goes when its lower layers
//! are frozen (shared by the causal-LM and cross-lingual tasks).
//!
//! In a profile: `trainable = "all"` (every parameter: the paper's full fine-tuning, arXiv 2310.03646 v2 App. B.1)
//! or `trainable = { top-layers = 2 }` (the top two transformer layers and the final norm; the CPU-sized
//! setting, where the frozen lower layers run once and their outputs are cached); `noise_at = "embeddings"` or
//! `"cached"`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which parameters fine-tuning updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trainable {
    /// Every parameter, embeddings included.
    #[default]
    All,
    /// The top `k` transformer layers and the final norm. Everything below them (embeddings included) is frozen,
    /// and so is a head tied to the embeddings.
    TopLayers(usize),
}

impl Trainable {
    /// Index of the first trained layer of a stack of `num_layers` (0 for `All`).
    pub fn first_trained_layer(&self, num_layers: usize) -> Result<usize> {
        match *self {
            Trainable::All => Ok(0),
            Trainable::TopLayers(k) if (1..=num_layers).contains(&k) => Ok(num_layers - k),
            Trainable::TopLayers(k) => Err(Error::Config(format!(
                "trainable = {{ top-layers = {k} }}: the model has {num_layers} layers; choose 1 to {num_layers}, \
                 or \"all\""
            ))),
        }
    }
}

/// Where TRAM-x, R3F and TRAM-Fisher add their input noise when the lower layers are frozen (without a frozen
/// prefix, always on the embeddings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseAt {
    /// On the token embeddings, then through the frozen layers without gradient: the paper's place (arXiv
    /// 2310.03646 v2 Eq. 5; the released code noises the word embeddings). One more pass of the frozen layers
    /// per noised forward.
    #[default]
    Embeddings,
    /// On the cached output of the frozen layers: no pass of the frozen layers per noised forward, but a
    /// different neighbourhood (σ is then relative to hidden states, not embeddings). Only with
    /// `trainable = { top-layers = k }`.
    Cached,
}

impl std::fmt::Display for Trainable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trainable::All => f.write_str("all"),
            Trainable::TopLayers(k) => write!(f, "top {k} layers + final norm"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Profile {
        trainable: Trainable,
        #[serde(default)]
        noise_at: NoiseAt,
    }

    #[test]
    fn spellings_and_bounds() {
        let p: Profile = serde_json::from_str(r#"{"trainable": "all"}"#).unwrap();
        assert_eq!(p.trainable, Trainable::All);
        let p: Profile = serde_json::from_str(r#"{"trainable": {"top-layers": 2}}"#).unwrap();
        assert_eq!(p.trainable, Trainable::TopLayers(2));
        assert!(serde_json::from_str::<Profile>(r#"{"trainable": "some"}"#).is_err());
        assert_eq!(Trainable::TopLayers(2).first_trained_layer(30).unwrap(), 28);
        assert_eq!(Trainable::All.first_trained_layer(30).unwrap(), 0);
        let err = Trainable::TopLayers(31).first_trained_layer(30).unwrap_err().to_string();
        assert!(err.contains("has 30 layers"), "{err}");
        assert!(Trainable::TopLayers(0).first_trained_layer(30).is_err());
        assert_eq!(p.noise_at, NoiseAt::Embeddings, "the paper's place is the default");
        let p: Profile = serde_json::from_str(r#"{"trainable": "all", "noise_at": "cached"}"#).unwrap();
        assert_eq!(p.noise_at, NoiseAt::Cached);
    }
}
