//! The methods of the paper, described by a small serde config and resolved, in one place, into the four
//! pieces of the family: an ascent rule, a trust-region target, a divergence, and the role the divergence
//! plays (radius of the ascent for TRAM, weighted penalty for the regularisers).
//!
//! One registry row per method ([`METHODS`]) gives its spelling, the paper's label and pass counts, and the
//! pieces its name stands for with the paper's defaults. A config's keys override the hyperparameters of those
//! pieces, so a key applies to a method exactly when one of its pieces holds it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ascent::{Ascent, TramEps};
use crate::divergence::{Divergence, DivergenceKind, Reduction};
use crate::error::{config_err, Result};
use crate::noise::{NoiseKind, NoiseSpec};

/// Every method the paper runs (arXiv 2310.03646 v2, Tables 1–5, 11–12). Spelled in configs as its
/// registry row says ([`MethodName::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MethodName {
    /// The base optimizer alone (SGD for vision, Adam for language in the paper).
    Base,
    Sam,
    Asam,
    Fsam,
    /// TRAM-θ_{t−1}: d = KL(p(·|x, θ_{t−1}) ‖ p(·|x, θ_t)).
    TramPrev,
    /// TRAM-θ_0: d against the frozen pre-trained model.
    TramPretrained,
    /// TRAM with an EMA of past θ as the target (in the released code, not in the paper's tables).
    TramEma,
    /// TRAM-x: d = KL(p(·|x + z, θ_t) ‖ p(·|x, θ_t)).
    TramX,
    /// TRAM-Fisher (Algorithm 2): Fisher-SAM with the Fisher estimated at x + z.
    TramFisher,
    /// Trust-region regulariser against θ_{t−1}.
    Trpo,
    /// Trust-region regulariser against noised inputs, symmetric KL.
    R3f,
    /// Trust-region regulariser against an EMA of past θ.
    Mesa,
    AsamTrpo,
    AsamR3f,
    AsamMesa,
}

/// The paper's defaults (arXiv 2310.03646 v2, App. B.2, unless noted).
pub mod defaults {
    /// SAM radius.
    pub const SAM_RHO: f64 = 0.05;
    /// ASAM radius.
    pub const ASAM_RHO: f64 = 0.5;
    /// ASAM's T = |θ| + η offset: the official ASAM value (the paper states none).
    pub const ASAM_ETA: f64 = 0.01;
    /// FSAM γ and η.
    pub const FSAM_GAMMA: f64 = 0.1;
    pub const FSAM_ETA: f64 = 0.1;
    /// R3F noise σ. TRAM-x and TRAM-Fisher use it too: the paper gives them no σ, and sharing R3F's
    /// makes TRAM-x measure the same neighbourhood as the R3F baseline it is compared with.
    pub const SIGMA: f64 = 0.1;
    /// MESA's EMA decay, also the default for TRAM-EMA.
    pub const EMA_DECAY: f64 = 0.999;
    /// Weight λ of every trust-region regulariser.
    pub const LAMBDA: f64 = 0.1;
}

/// One registry row: everything known about a method before its config is read.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodInfo {
    pub name: MethodName,
    /// The config spelling (`tram-prev`, `asam-r3f`, ...).
    pub spelling: &'static str,
    /// A second spelling a config may use (`asam+r3f`).
    pub alias: Option<&'static str>,
    /// The name the paper prints.
    pub paper_label: &'static str,
    /// Forward and backward passes per step as the paper states them (Tables 1–2); `None` where it states none.
    pub paper_passes: Option<(u32, u32)>,
    /// The pieces the name stands for, with the paper's defaults.
    pub ascent: Option<Ascent>,
    pub trust_region: Option<TrustRegion>,
    pub ascent_noise: Option<NoiseSpec>,
}

use defaults::*;

const ASAM: Option<Ascent> = Some(Ascent::Asam { rho: ASAM_RHO, eta: ASAM_ETA });
const FISHER: Option<Ascent> = Some(Ascent::Fisher { gamma: FSAM_GAMMA, eta: FSAM_ETA });
/// Eq. 7: ASAM's rule with the radius d.
const TRAM: Option<Ascent> = Some(Ascent::Tram { eta: ASAM_ETA, max_radius: None, eps: TramEps::Paper });
const NOISE: NoiseSpec = NoiseSpec { sigma: SIGMA, kind: NoiseKind::Gaussian, relative: false };
const EMA: Target = Target::Ema { decay: EMA_DECAY };

/// TRAM: d(target ‖ θ), forward KL (App. C.5), as the ascent radius.
const fn radius(target: Target) -> Option<TrustRegion> {
    Some(TrustRegion {
        target,
        target_mode: TargetMode::Train,
        divergence: Divergence::new(DivergenceKind::KlForward),
        role: Role::Radius,
    })
}

/// TRPO, R3F, MESA: λ·d(target ‖ θ) added to the loss.
const fn regulariser(target: Target, kind: DivergenceKind) -> Option<TrustRegion> {
    Some(TrustRegion {
        target,
        target_mode: TargetMode::Train,
        divergence: Divergence::new(kind),
        role: Role::Regulariser { lambda: LAMBDA },
    })
}

/// The registry, in [`MethodName`] order.
pub const METHODS: [MethodInfo; 15] = {
    use MethodName::*;
    [
        MethodInfo {
            name: Base,
            spelling: "base",
            alias: None,
            paper_label: "base optimizer",
            paper_passes: Some((1, 1)),
            ascent: None,
            trust_region: None,
            ascent_noise: None,
        },
        MethodInfo {
            name: Sam,
            spelling: "sam",
            alias: None,
            paper_label: "SAM",
            paper_passes: Some((2, 2)),
            ascent: Some(Ascent::Sam { rho: SAM_RHO }),
            trust_region: None,
            ascent_noise: None,
        },
        MethodInfo {
            name: Asam,
            spelling: "asam",
            alias: None,
            paper_label: "ASAM",
            paper_passes: Some((2, 2)),
            ascent: ASAM,
            trust_region: None,
            ascent_noise: None,
        },
        MethodInfo {
            name: Fsam,
            spelling: "fsam",
            alias: None,
            paper_label: "FSAM",
            paper_passes: Some((2, 2)),
            ascent: FISHER,
            trust_region: None,
            ascent_noise: None,
        },
        MethodInfo {
            name: TramPrev,
            spelling: "tram-prev",
            alias: None,
            paper_label: "TRAM-θ_{t−1}",
            paper_passes: Some((3, 2)),
            ascent: TRAM,
            trust_region: radius(Target::PreviousStep),
            ascent_noise: None,
        },
        MethodInfo {
            name: TramPretrained,
            spelling: "tram-pretrained",
            alias: None,
            paper_label: "TRAM-θ_0",
            paper_passes: Some((3, 2)),
            ascent: TRAM,
            trust_region: radius(Target::Pretrained),
            ascent_noise: None,
        },
        MethodInfo {
            name: TramEma,
            spelling: "tram-ema",
            alias: None,
            paper_label: "TRAM-EMA",
            paper_passes: None,
            ascent: TRAM,
            trust_region: radius(EMA),
            ascent_noise: None,
        },
        MethodInfo {
            name: TramX,
            spelling: "tram-x",
            alias: None,
            paper_label: "TRAM-x",
            paper_passes: Some((3, 2)),
            ascent: TRAM,
            trust_region: radius(Target::InputNoise(NOISE)),
            ascent_noise: None,
        },
        MethodInfo {
            name: TramFisher,
            spelling: "tram-fisher",
            alias: None,
            paper_label: "TRAM-Fisher",
            paper_passes: Some((2, 2)),
            ascent: FISHER,
            trust_region: None,
            ascent_noise: Some(NOISE),
        },
        MethodInfo {
            name: Trpo,
            spelling: "trpo",
            alias: None,
            paper_label: "TRPO",
            paper_passes: Some((2, 1)),
            ascent: None,
            trust_region: regulariser(Target::PreviousStep, DivergenceKind::KlForward),
            ascent_noise: None,
        },
        MethodInfo {
            name: R3f,
            spelling: "r3f",
            alias: None,
            paper_label: "R3F",
            paper_passes: Some((2, 1)),
            ascent: None,
            trust_region: regulariser(Target::InputNoise(NOISE), DivergenceKind::KlSymmetric),
            ascent_noise: None,
        },
        MethodInfo {
            name: Mesa,
            spelling: "mesa",
            alias: None,
            paper_label: "MESA",
            paper_passes: Some((2, 1)),
            ascent: None,
            trust_region: regulariser(EMA, DivergenceKind::KlForward),
            ascent_noise: None,
        },
        MethodInfo {
            name: AsamTrpo,
            spelling: "asam-trpo",
            alias: Some("asam+trpo"),
            paper_label: "ASAM+TRPO",
            paper_passes: None,
            ascent: ASAM,
            trust_region: regulariser(Target::PreviousStep, DivergenceKind::KlForward),
            ascent_noise: None,
        },
        MethodInfo {
            name: AsamR3f,
            spelling: "asam-r3f",
            alias: Some("asam+r3f"),
            paper_label: "ASAM+R3F",
            paper_passes: None,
            ascent: ASAM,
            trust_region: regulariser(Target::InputNoise(NOISE), DivergenceKind::KlSymmetric),
            ascent_noise: None,
        },
        MethodInfo {
            name: AsamMesa,
            spelling: "asam-mesa",
            alias: Some("asam+mesa"),
            paper_label: "ASAM+MESA",
            paper_passes: None,
            ascent: ASAM,
            trust_region: regulariser(EMA, DivergenceKind::KlForward),
            ascent_noise: None,
        },
    ]
};

// The registry is indexed by `MethodName as usize`.
const _: () = {
    let mut i = 0;
    while i < METHODS.len() {
        assert!(METHODS[i].name as usize == i, "METHODS must list the methods in MethodName order");
        i += 1;
    }
};

/// Every spelling, for serde's "expected one of" message.
const SPELLINGS: [&str; 15] = {
    let mut out = [""; 15];
    let mut i = 0;
    while i < METHODS.len() {
        out[i] = METHODS[i].spelling;
        i += 1;
    }
    out
};

impl MethodName {
    pub const ALL: [MethodName; 15] = {
        let mut out = [MethodName::Base; 15];
        let mut i = 0;
        while i < METHODS.len() {
            out[i] = METHODS[i].name;
            i += 1;
        }
        out
    };

    /// The method's registry row.
    pub fn info(&self) -> &'static MethodInfo {
        &METHODS[*self as usize]
    }

    /// The config spelling (`tram-prev`, `asam-r3f`, ...).
    pub fn as_str(&self) -> &'static str {
        self.info().spelling
    }

    /// The name the paper prints.
    pub fn paper_label(&self) -> &'static str {
        self.info().paper_label
    }

    /// Forward and backward passes per step as the paper states them (Tables 1–2); `None` where it states none.
    pub fn paper_passes(&self) -> Option<(u32, u32)> {
        self.info().paper_passes
    }

    /// An ASAM + trust-region-regulariser combination (App. C.3) rather than a method of its own.
    pub fn is_combination(&self) -> bool {
        let info = self.info();
        info.ascent.is_some() && info.trust_region.is_some_and(|tr| matches!(tr.role, Role::Regulariser { .. }))
    }

    /// The method of a spelling or alias.
    pub fn from_spelling(s: &str) -> Option<Self> {
        METHODS.iter().find(|m| m.spelling == s || m.alias == Some(s)).map(|m| m.name)
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::from_spelling(s)
            .ok_or_else(|| config_err(format!("unknown method `{s}`; expected one of: {}", SPELLINGS.join(", "))))
    }
}

impl std::fmt::Display for MethodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MethodName {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_unit_variant("MethodName", *self as u32, self.as_str())
    }
}

impl<'de> Deserialize<'de> for MethodName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::from_spelling(&s).ok_or_else(|| serde::de::Error::unknown_variant(&s, &SPELLINGS))
    }
}

/// A method as written in a config file: a name and any of the hyperparameters that apply to it. Keys that do
/// not apply to the named method are rejected; absent ones take the paper's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    pub name: MethodName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rho: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<NoiseKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decay: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<DivergenceKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduction: Option<Reduction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_radius: Option<f64>,
    /// TRAM's ε: `paper` (Eq. 7, the default) or `released-code` (the gradient dropped, as the released code does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<TramEps>,
    /// Input noise's σ as a multiple of the scale (RMS) of the tensor the model adds it to, which the model
    /// measures once from its pre-trained weights or cached states ([`crate::Model::noise_scale`]); instead of
    /// the absolute `sigma`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma_relative: Option<f64>,
    /// How a parameter target (θ_{t−1}, θ_0, an EMA) is kept and evaluated: `train` (the default) or
    /// `released-code` ([`TargetMode`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_mode: Option<TargetMode>,
}

/// What the divergence is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Target {
    /// θ_{t−1}, the parameters the previous step started from (Eq. 4).
    PreviousStep,
    /// θ_0, the parameters at the start of training.
    Pretrained,
    /// EMA ← decay · EMA + (1 − decay) · θ after every step, starting from θ_0.
    Ema { decay: f64 },
    /// The current model on noised inputs (Eq. 5).
    InputNoise(NoiseSpec),
}

impl Target {
    /// Whether the target is a copy of the parameters (and so costs their memory).
    pub fn holds_parameters(&self) -> bool {
        !matches!(self, Target::InputNoise(_))
    }
}

/// How a parameter target is kept and evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetMode {
    /// The target's parameters (θ_{t−1}: those the previous step started from) in train mode with pass 1's
    /// dropout draw: d measures the parameters' difference alone (Eq. 4).
    #[default]
    Train,
    /// The released code's `ParameterHistoryTarget`: a copy of the model updated after each step (an EMA whose
    /// decay is 0 for θ_{t−1}, so it holds the parameters after the update; θ_0 is never updated), evaluated in
    /// eval mode, without dropout. For θ_{t−1} the target is then the current parameters, and d is the divergence
    /// between their eval-mode and their dropout forward, which does not shrink with the learning rate.
    ReleasedCode,
}

/// How the divergence enters the step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The radius of the TRAM ascent (Eq. 7).
    Radius,
    /// A penalty λ·d added to the loss (TRPO, R3F, MESA, and in both passes of the ASAM combinations).
    Regulariser { lambda: f64 },
}

/// A trust region: target, divergence and role.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrustRegion {
    pub target: Target,
    /// How a parameter target is kept and evaluated (no effect on [`Target::InputNoise`]).
    pub target_mode: TargetMode,
    pub divergence: Divergence,
    pub role: Role,
}

/// A resolved method: what the step driver runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Method {
    pub name: MethodName,
    pub ascent: Option<Ascent>,
    pub trust_region: Option<TrustRegion>,
    /// TRAM-Fisher: pass 1 runs on x + z, so its gradient gives both the Fisher estimate F̂(x + z; θ) and the
    /// ascent direction, at 2 forward / 2 backward passes.
    pub ascent_noise: Option<NoiseSpec>,
}

impl MethodInfo {
    /// The method with the paper's defaults.
    pub fn preset(&self) -> Method {
        Method {
            name: self.name,
            ascent: self.ascent,
            trust_region: self.trust_region,
            ascent_noise: self.ascent_noise,
        }
    }
}

/// A config value on its way to a piece.
#[derive(Debug, Clone, Copy)]
enum Value {
    Number(f64),
    Noise(NoiseKind),
    Divergence(DivergenceKind),
    Reduction(Reduction),
    Eps(TramEps),
    TargetMode(TargetMode),
}

/// A hyperparameter held by a piece, which a config key can override; its kind says what values it takes.
enum Slot<'a> {
    /// A finite number >= 0 (ρ, η, γ, σ, λ, scale).
    NonNegative(&'a mut f64),
    /// An optional finite number >= 0 (TRAM's `max_radius`).
    Cap(&'a mut Option<f64>),
    /// An EMA decay in [0, 1].
    Decay(&'a mut f64),
    Noise(&'a mut NoiseKind),
    Divergence(&'a mut DivergenceKind),
    Reduction(&'a mut Reduction),
    Eps(&'a mut TramEps),
    TargetMode(&'a mut TargetMode),
}

impl Slot<'_> {
    fn set(&mut self, key: &str, value: Value) -> std::result::Result<(), String> {
        let nonneg = |v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(format!("{key} must be finite and >= 0, got {v}"))
            }
        };
        match (self, value) {
            (Slot::NonNegative(x), Value::Number(v)) => **x = nonneg(v)?,
            (Slot::Cap(x), Value::Number(v)) => **x = Some(nonneg(v)?),
            (Slot::Decay(x), Value::Number(v)) if (0.0..=1.0).contains(&v) => **x = v,
            (Slot::Decay(_), Value::Number(v)) => return Err(format!("EMA decay must be in [0, 1], got {v}")),
            (Slot::Noise(x), Value::Noise(v)) => **x = v,
            (Slot::Divergence(x), Value::Divergence(v)) => **x = v,
            (Slot::Reduction(x), Value::Reduction(v)) => **x = v,
            (Slot::Eps(x), Value::Eps(v)) => **x = v,
            (Slot::TargetMode(x), Value::TargetMode(v)) => **x = v,
            (_, v) => unreachable!("key `{key}`: a piece's slot cannot hold {v:?}"),
        }
        Ok(())
    }
}

impl Method {
    /// The hyperparameters of the method's pieces by config key, in the order ascent, ascent noise, role, target,
    /// divergence.
    fn slots(&mut self) -> Vec<(&'static str, Slot<'_>)> {
        let Method { ascent, trust_region, ascent_noise, .. } = self;
        let mut slots = Vec::new();
        match ascent {
            Some(Ascent::Sam { rho }) => slots.push(("rho", Slot::NonNegative(rho))),
            Some(Ascent::Asam { rho, eta }) => {
                slots.extend([("rho", Slot::NonNegative(rho)), ("eta", Slot::NonNegative(eta))]);
            }
            Some(Ascent::Fisher { gamma, eta }) => {
                slots.extend([("gamma", Slot::NonNegative(gamma)), ("eta", Slot::NonNegative(eta))]);
            }
            Some(Ascent::Tram { eta, max_radius, eps }) => {
                slots.extend([
                    ("eta", Slot::NonNegative(eta)),
                    ("max_radius", Slot::Cap(max_radius)),
                    ("eps", Slot::Eps(eps)),
                ]);
            }
            None => {}
        }
        if let Some(noise) = ascent_noise {
            slots.extend(noise_slots(noise));
        }
        if let Some(TrustRegion { target, target_mode, divergence, role }) = trust_region {
            if let Role::Regulariser { lambda } = role {
                slots.push(("lambda", Slot::NonNegative(lambda)));
            }
            let holds_parameters = target.holds_parameters();
            match target {
                Target::Ema { decay } => slots.push(("decay", Slot::Decay(decay))),
                Target::InputNoise(noise) => slots.extend(noise_slots(noise)),
                Target::PreviousStep | Target::Pretrained => {}
            }
            if holds_parameters {
                slots.push(("target_mode", Slot::TargetMode(target_mode)));
            }
            let Divergence { kind, reduction, scale } = divergence;
            slots.extend([
                ("divergence", Slot::Divergence(kind)),
                ("reduction", Slot::Reduction(reduction)),
                ("scale", Slot::NonNegative(scale)),
            ]);
        }
        slots
    }

    /// The config keys that apply to this method, in the order of its pieces (`sigma_relative` where `sigma` does).
    pub fn keys(&self) -> Vec<&'static str> {
        let mut keys = vec![];
        for (key, _) in self.clone().slots() {
            keys.push(key);
            if key == "sigma" {
                keys.push("sigma_relative");
            }
        }
        keys
    }
}

fn noise_slots(noise: &mut NoiseSpec) -> [(&'static str, Slot<'_>); 2] {
    [("sigma", Slot::NonNegative(&mut noise.sigma)), ("noise", Slot::Noise(&mut noise.kind))]
}

impl Method {
    /// Whether the driver keeps a copy of θ: for the restore after an ascent, and to become θ_{t−1} after the step.
    pub fn saves_parameters(&self) -> bool {
        self.ascent.is_some() || self.trust_region.is_some_and(|t| t.target == Target::PreviousStep)
    }

    /// Whether the trust-region target is a copy of the parameters (θ_{t−1}, θ_0, the EMA).
    pub fn holds_target_copy(&self) -> bool {
        self.trust_region.is_some_and(|t| t.target.holds_parameters())
    }

    /// Forward and backward passes per step: the paper's counts (Tables 1–2) where it states them, else the
    /// pieces' (pass 1; the target's forward for a radius or a regulariser; the ascent's second forward and
    /// backward).
    pub fn passes(&self) -> (u32, u32) {
        self.name.paper_passes().unwrap_or_else(|| {
            let ascent = u32::from(self.ascent.is_some());
            (1 + ascent + u32::from(self.trust_region.is_some()), 1 + ascent)
        })
    }

    /// The input noises of the method (TRAM-x's and R3F's target, TRAM-Fisher's pass 1).
    pub fn noise_specs(&self) -> Vec<&NoiseSpec> {
        let target = match &self.trust_region {
            Some(TrustRegion { target: Target::InputNoise(spec), .. }) => Some(spec),
            _ => None,
        };
        target.into_iter().chain(self.ascent_noise.as_ref()).collect()
    }

    /// [`Method::noise_specs`], to change.
    pub fn noise_specs_mut(&mut self) -> Vec<&mut NoiseSpec> {
        let target = match &mut self.trust_region {
            Some(TrustRegion { target: Target::InputNoise(spec), .. }) => Some(spec),
            _ => None,
        };
        target.into_iter().chain(self.ascent_noise.as_mut()).collect()
    }

    /// The method with every relative σ made absolute: σ · `scale`, where `scale` is the RMS of the tensor the
    /// model adds its noise to ([`crate::Model::noise_scale`]). An error when a σ is relative and no scale is known.
    pub fn with_noise_scale(mut self, scale: Option<f64>) -> Result<Self> {
        let name = self.name;
        for spec in self.noise_specs_mut() {
            if spec.relative {
                let scale = scale.filter(|s| s.is_finite() && *s > 0.0).ok_or_else(|| {
                    config_err(format!(
                        "method `{name}`: sigma_relative needs the scale of the tensor the model adds noise to, and \
                         this model does not measure one (give the absolute `sigma`)"
                    ))
                })?;
                spec.sigma *= scale;
                spec.relative = false;
            }
        }
        Ok(self)
    }
}

impl MethodConfig {
    pub fn new(name: MethodName) -> Self {
        Self {
            name,
            rho: None,
            eta: None,
            gamma: None,
            sigma: None,
            noise: None,
            decay: None,
            lambda: None,
            divergence: None,
            reduction: None,
            scale: None,
            max_radius: None,
            eps: None,
            sigma_relative: None,
            target_mode: None,
        }
    }

    /// The keys given, with their values.
    fn overrides(&self) -> Vec<(&'static str, Value)> {
        use Value::Number;
        let keys = [
            ("rho", self.rho.map(Number)),
            ("eta", self.eta.map(Number)),
            ("gamma", self.gamma.map(Number)),
            // `sigma_relative` sets the same σ, then marks it relative (`build`).
            ("sigma", self.sigma.or(self.sigma_relative).map(Number)),
            ("noise", self.noise.map(Value::Noise)),
            ("decay", self.decay.map(Number)),
            ("lambda", self.lambda.map(Number)),
            ("divergence", self.divergence.map(Value::Divergence)),
            ("reduction", self.reduction.map(Value::Reduction)),
            ("scale", self.scale.map(Number)),
            ("max_radius", self.max_radius.map(Number)),
            ("eps", self.eps.map(Value::Eps)),
            ("target_mode", self.target_mode.map(Value::TargetMode)),
        ];
        keys.into_iter().filter_map(|(key, value)| Some((key, value?))).collect()
    }

    /// Checks the config and resolves it: the name's preset pieces with the given keys overriding their defaults.
    pub fn build(&self) -> Result<Method> {
        if self.sigma.is_some() && self.sigma_relative.is_some() {
            return Err(config_err(format!(
                "method `{}`: give `sigma` (absolute) or `sigma_relative` (a multiple of the noised tensor's scale), \
                 not both",
                self.name
            )));
        }
        let mut method = self.name.info().preset();
        let mut slots = method.slots();
        let overrides = self.overrides();
        if let Some((key, _)) = overrides.iter().find(|(key, _)| !slots.iter().any(|(k, _)| k == key)) {
            let key = if *key == "sigma" && self.sigma.is_none() { "sigma_relative" } else { key };
            let takes = self.name.info().preset().keys();
            return Err(config_err(format!(
                "key `{key}` does not apply to method `{}` (it takes: {})",
                self.name,
                if takes.is_empty() { "no keys".to_string() } else { takes.join(", ") }
            )));
        }
        for (key, value) in overrides {
            let (_, slot) = slots.iter_mut().find(|(k, _)| *k == key).expect("checked above");
            slot.set(key, value).map_err(|e| config_err(format!("method `{}`: {e}", self.name)))?;
        }
        drop(slots);
        if self.sigma_relative.is_some() {
            for spec in method.noise_specs_mut() {
                spec.relative = true;
            }
        }
        Ok(method)
    }
}

/// How a method reads in a table: the columns of the paper's Table 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// What the trust region measures, e.g. `KL(θ_{t−1} ‖ θ_t)`, or `—`.
    pub measure: String,
    /// The ε rule, e.g. `Eq. 7 (TRAM)`, or `—`.
    pub rule: String,
    /// The ascent's domain, e.g. `ρ-ball, ρ=0.05`, or `—`.
    pub domain: String,
}

impl Method {
    /// Short descriptions for tables.
    pub fn describe(&self) -> Description {
        let target = |t: &Target| match t {
            Target::PreviousStep => "θ_{t−1}".to_string(),
            Target::Pretrained => "θ_0".to_string(),
            Target::Ema { decay } => format!("EMA(θ, {decay})"),
            Target::InputNoise(n) => {
                format!("x+z, z~{}(σ={})", if n.kind == NoiseKind::Gaussian { "N" } else { "U" }, n.sigma)
            }
        };
        let measure = match (&self.trust_region, &self.ascent_noise) {
            (Some(tr), _) => {
                let d = match tr.divergence.kind {
                    DivergenceKind::KlForward => "KL",
                    DivergenceKind::KlReverse => "KL-rev",
                    DivergenceKind::KlSymmetric => "KL-sym",
                    DivergenceKind::L2 => "L2",
                    DivergenceKind::Mmd => "MMD",
                };
                let m = format!("{d}({} ‖ θ_t)", target(&tr.target));
                match tr.role {
                    Role::Radius => m,
                    Role::Regulariser { lambda } => format!("+{lambda}·{m}"),
                }
            }
            (None, Some(n)) => match n.kind {
                NoiseKind::Gaussian => format!("F̂(x+z; θ), z~N(0, {}²)", n.sigma),
                NoiseKind::Uniform => format!("F̂(x+z; θ), z~U(−{0}, {0})", n.sigma),
            },
            (None, None) => "—".to_string(),
        };
        let (rule, domain) = match &self.ascent {
            None => ("—".to_string(), "—".to_string()),
            Some(Ascent::Sam { rho }) => ("ρ·g/‖g‖".to_string(), format!("ρ-ball, ρ={rho}")),
            Some(Ascent::Asam { rho, eta }) => ("Eq. 2 (ASAM)".to_string(), format!("ρ-ball, ρ={rho}, η={eta}")),
            Some(Ascent::Fisher { gamma, eta }) => {
                ("Eq. 8 (Fisher)".to_string(), format!("F̂-ellipse, γ={gamma}, η={eta}"))
            }
            Some(Ascent::Tram { eps: TramEps::Paper, .. }) => ("Eq. 7 (TRAM)".to_string(), "d-ball".to_string()),
            Some(Ascent::Tram { eps: TramEps::ReleasedCode, .. }) => {
                ("released code: d·T²/‖T g‖ (no g)".to_string(), "d-ball".to_string())
            }
        };
        Description { measure, rule, domain }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_builds_with_defaults_and_roundtrips() {
        for name in MethodName::ALL {
            let m = MethodConfig::new(name).build().unwrap();
            assert_eq!(m.name, name);
            assert_eq!(MethodName::parse(name.as_str()).unwrap(), name);
            let toml = format!("name = \"{}\"", name.as_str());
            let cfg: MethodConfig = toml::from_str(&toml).unwrap();
            assert_eq!(cfg.build().unwrap(), m);
        }
    }

    #[test]
    fn the_registry_spells_every_method_once() {
        assert_eq!(MethodName::ALL.len(), METHODS.len());
        for (i, info) in METHODS.iter().enumerate() {
            assert_eq!(info.name as usize, i);
            assert_eq!(serde_json::to_string(&info.name).unwrap(), format!("\"{}\"", info.spelling));
            if let Some(alias) = info.alias {
                assert_eq!(MethodName::parse(alias).unwrap(), info.name);
                assert_eq!(serde_json::from_str::<MethodName>(&format!("\"{alias}\"")).unwrap(), info.name);
            }
        }
        let combinations: Vec<MethodName> = MethodName::ALL.into_iter().filter(MethodName::is_combination).collect();
        assert_eq!(combinations, [MethodName::AsamTrpo, MethodName::AsamR3f, MethodName::AsamMesa]);
    }

    #[test]
    fn every_key_a_piece_holds_is_a_config_key_that_reaches_it() {
        // A config setting every key the method takes (to a value unlike the default) must parse and build, and
        // change the method; so every slot name is a MethodConfig field and is wired to its piece.
        for name in MethodName::ALL {
            let preset = name.info().preset();
            let keys = preset.keys();
            let mut toml = format!("name = \"{name}\"\n");
            // `sigma_relative` is the other spelling of σ (never given with `sigma`): tested on its own below.
            for key in keys.iter().filter(|k| **k != "sigma_relative") {
                let value = match *key {
                    "noise" => "\"uniform\"",
                    "divergence" => "\"kl-reverse\"",
                    "reduction" => "\"released-code\"",
                    "eps" | "target_mode" => "\"released-code\"",
                    _ => "0.25",
                };
                toml.push_str(&format!("{key} = {value}\n"));
            }
            let cfg: MethodConfig = toml::from_str(&toml).unwrap_or_else(|e| panic!("{name}: {e}"));
            let built = cfg.build().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(built.keys(), keys);
            if !keys.is_empty() {
                assert_ne!(built, preset, "{name}: the keys changed nothing");
            }
        }
    }

    #[test]
    fn keys_follow_from_the_pieces() {
        let keys = |name: MethodName| name.info().preset().keys().join(", ");
        assert_eq!(keys(MethodName::Base), "");
        assert_eq!(keys(MethodName::Sam), "rho");
        assert_eq!(
            keys(MethodName::TramX),
            "eta, max_radius, eps, sigma, sigma_relative, noise, divergence, reduction, scale"
        );
        assert_eq!(keys(MethodName::TramPrev), "eta, max_radius, eps, target_mode, divergence, reduction, scale");
        assert_eq!(keys(MethodName::TramFisher), "gamma, eta, sigma, sigma_relative, noise");
        assert_eq!(keys(MethodName::AsamMesa), "rho, eta, lambda, decay, target_mode, divergence, reduction, scale");
    }

    #[test]
    fn sigma_relative_is_resolved_by_the_models_scale() {
        let cfg: MethodConfig = toml::from_str("name = \"tram-x\"\nsigma_relative = 0.2").unwrap();
        let method = cfg.build().unwrap();
        let Some(TrustRegion { target: Target::InputNoise(spec), .. }) = method.trust_region else { panic!() };
        assert!(spec.relative && spec.sigma == 0.2);
        let resolved = method.clone().with_noise_scale(Some(0.5)).unwrap();
        let Some(TrustRegion { target: Target::InputNoise(spec), .. }) = resolved.trust_region else { panic!() };
        assert!(!spec.relative && (spec.sigma - 0.1).abs() < 1e-15);
        let err = method.with_noise_scale(None).unwrap_err().to_string();
        assert!(err.contains("sigma_relative needs the scale"), "{err}");
        // TRAM-Fisher's pass-1 noise and R3F's target are relative too; an absolute σ needs no scale.
        let fisher: MethodConfig = toml::from_str("name = \"tram-fisher\"\nsigma_relative = 0.5").unwrap();
        assert_eq!(fisher.build().unwrap().with_noise_scale(Some(2.0)).unwrap().ascent_noise.unwrap().sigma, 1.0);
        let r3f = MethodConfig::new(MethodName::R3f).build().unwrap();
        assert_eq!(r3f.clone().with_noise_scale(None).unwrap(), r3f);
        let both: MethodConfig = toml::from_str("name = \"r3f\"\nsigma = 0.1\nsigma_relative = 0.2").unwrap();
        assert!(both.build().unwrap_err().to_string().contains("not both"));
        let sam: MethodConfig = toml::from_str("name = \"sam\"\nsigma_relative = 0.2").unwrap();
        assert!(sam.build().unwrap_err().to_string().contains("key `sigma_relative` does not apply"));
    }

    #[test]
    fn target_mode_applies_to_parameter_targets_only() {
        let prev: MethodConfig = toml::from_str("name = \"tram-prev\"\ntarget_mode = \"released-code\"").unwrap();
        assert_eq!(prev.build().unwrap().trust_region.unwrap().target_mode, TargetMode::ReleasedCode);
        let x: MethodConfig = toml::from_str("name = \"tram-x\"\ntarget_mode = \"released-code\"").unwrap();
        assert!(x.build().unwrap_err().to_string().contains("key `target_mode` does not apply"));
    }

    #[test]
    fn describe_names_the_noise_distribution() {
        let mut cfg = MethodConfig::new(MethodName::TramFisher);
        assert_eq!(cfg.build().unwrap().describe().measure, "F̂(x+z; θ), z~N(0, 0.1²)");
        cfg.noise = Some(NoiseKind::Uniform);
        assert_eq!(cfg.build().unwrap().describe().measure, "F̂(x+z; θ), z~U(−0.1, 0.1)");
        let tram_x = MethodConfig::new(MethodName::TramX).build().unwrap().describe();
        let expected = Description {
            measure: "KL(x+z, z~N(σ=0.1) ‖ θ_t)".into(),
            rule: "Eq. 7 (TRAM)".into(),
            domain: "d-ball".into(),
        };
        assert_eq!(tram_x, expected);
    }

    #[test]
    fn paper_defaults() {
        let sam = MethodConfig::new(MethodName::Sam).build().unwrap();
        assert_eq!(sam.ascent, Some(Ascent::Sam { rho: 0.05 }));
        let asam = MethodConfig::new(MethodName::Asam).build().unwrap();
        assert_eq!(asam.ascent, Some(Ascent::Asam { rho: 0.5, eta: 0.01 }));
        let fsam = MethodConfig::new(MethodName::Fsam).build().unwrap();
        assert_eq!(fsam.ascent, Some(Ascent::Fisher { gamma: 0.1, eta: 0.1 }));
        let r3f = MethodConfig::new(MethodName::R3f).build().unwrap().trust_region.unwrap();
        assert_eq!(r3f.target, Target::InputNoise(NoiseSpec::gaussian(0.1)));
        assert_eq!(r3f.divergence.kind, DivergenceKind::KlSymmetric);
        assert_eq!(r3f.role, Role::Regulariser { lambda: 0.1 });
        let mesa = MethodConfig::new(MethodName::Mesa).build().unwrap().trust_region.unwrap();
        assert_eq!(mesa.target, Target::Ema { decay: 0.999 });
        let tram = MethodConfig::new(MethodName::TramPrev).build().unwrap().trust_region.unwrap();
        assert_eq!(tram.divergence, Divergence::new(DivergenceKind::KlForward));
        assert_eq!(tram.role, Role::Radius);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let err = |s: &str| -> String {
            match toml::from_str::<MethodConfig>(s) {
                Err(e) => e.to_string(),
                Ok(c) => c.build().unwrap_err().to_string(),
            }
        };
        assert!(err("name = \"sam\"\nrho = -0.1").contains("rho must be finite and >= 0"));
        assert!(err("name = \"tram-x\"\nsigma = -1.0").contains("sigma"));
        assert!(err("name = \"mesa\"\ndecay = 1.5").contains("decay must be in [0, 1]"));
        assert!(err("name = \"tram-ema\"\ndecay = -0.1").contains("decay must be in [0, 1]"));
        assert!(err("name = \"sgdd\"").contains("unknown variant `sgdd`"));
        assert!(
            err("name = \"sam\"\nsigma = 0.1").contains("key `sigma` does not apply to method `sam` (it takes: rho)")
        );
        assert!(err("name = \"base\"\nrho = 0.1").contains("(it takes: no keys)"));
        assert!(err("name = \"tram-prev\"\ndivergence = \"kl-sideways\"").contains("unknown variant `kl-sideways`"));
        assert!(err("name = \"sam\"\nrhoo = 0.1").contains("unknown field `rhoo`"));
        assert!(MethodName::parse("tram").unwrap_err().to_string().contains("tram-prev"));
        assert_eq!(MethodName::parse("asam+r3f").unwrap(), MethodName::AsamR3f);
    }

    #[test]
    fn the_released_code_eps_is_an_option_of_the_tram_methods_only() {
        let cfg: MethodConfig = toml::from_str("name = \"tram-x\"\neps = \"released-code\"\neta = 0.0").unwrap();
        let m = cfg.build().unwrap();
        assert_eq!(m.ascent, Some(Ascent::Tram { eta: 0.0, max_radius: None, eps: TramEps::ReleasedCode }));
        assert!(m.describe().rule.starts_with("released code"));
        let err =
            toml::from_str::<MethodConfig>("name = \"asam\"\neps = \"released-code\"").unwrap().build().unwrap_err();
        assert!(err.to_string().contains("key `eps` does not apply to method `asam`"), "{err}");
        assert_eq!(MethodConfig::new(MethodName::TramPrev).build().unwrap().ascent, TRAM, "Eq. 7 by default");
    }

    #[test]
    fn overrides_apply() {
        let cfg: MethodConfig = toml::from_str(
            "name = \"tram-x\"\nsigma = 0.02\nnoise = \"uniform\"\ndivergence = \"kl-symmetric\"\nmax_radius = 0.5",
        )
        .unwrap();
        let m = cfg.build().unwrap();
        let tr = m.trust_region.unwrap();
        assert_eq!(tr.target, Target::InputNoise(NoiseSpec { sigma: 0.02, kind: NoiseKind::Uniform, relative: false }));
        assert_eq!(tr.divergence.kind, DivergenceKind::KlSymmetric);
        assert_eq!(m.ascent, Some(Ascent::Tram { eta: 0.01, max_radius: Some(0.5), eps: TramEps::Paper }));
    }
}
