//! The methods of the paper, described by a small serde config and resolved, in one place, into the four
//! pieces of the family: an ascent rule, a trust-region target, a divergence, and the role the divergence
//! plays (radius of the ascent for TRAM, weighted penalty for the regularisers).

use serde::{Deserialize, Serialize};

use crate::ascent::Ascent;
use crate::divergence::{Divergence, DivergenceKind, Reduction};
use crate::error::{config_err, Result};
use crate::noise::{NoiseKind, NoiseSpec};

/// Every method the paper runs (Tables 1–5, 11–12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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
    #[serde(alias = "asam+trpo")]
    AsamTrpo,
    #[serde(alias = "asam+r3f")]
    AsamR3f,
    #[serde(alias = "asam+mesa")]
    AsamMesa,
}

impl MethodName {
    pub const ALL: [MethodName; 15] = [
        MethodName::Base,
        MethodName::Sam,
        MethodName::Asam,
        MethodName::Fsam,
        MethodName::TramPrev,
        MethodName::TramPretrained,
        MethodName::TramEma,
        MethodName::TramX,
        MethodName::TramFisher,
        MethodName::Trpo,
        MethodName::R3f,
        MethodName::Mesa,
        MethodName::AsamTrpo,
        MethodName::AsamR3f,
        MethodName::AsamMesa,
    ];

    /// The config spelling (`tram-prev`, `asam-r3f`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            MethodName::Base => "base",
            MethodName::Sam => "sam",
            MethodName::Asam => "asam",
            MethodName::Fsam => "fsam",
            MethodName::TramPrev => "tram-prev",
            MethodName::TramPretrained => "tram-pretrained",
            MethodName::TramEma => "tram-ema",
            MethodName::TramX => "tram-x",
            MethodName::TramFisher => "tram-fisher",
            MethodName::Trpo => "trpo",
            MethodName::R3f => "r3f",
            MethodName::Mesa => "mesa",
            MethodName::AsamTrpo => "asam-trpo",
            MethodName::AsamR3f => "asam-r3f",
            MethodName::AsamMesa => "asam-mesa",
        }
    }

    /// The name the paper prints.
    pub fn paper_label(&self) -> &'static str {
        match self {
            MethodName::Base => "base optimizer",
            MethodName::Sam => "SAM",
            MethodName::Asam => "ASAM",
            MethodName::Fsam => "FSAM",
            MethodName::TramPrev => "TRAM-θ_{t−1}",
            MethodName::TramPretrained => "TRAM-θ_0",
            MethodName::TramEma => "TRAM-EMA",
            MethodName::TramX => "TRAM-x",
            MethodName::TramFisher => "TRAM-Fisher",
            MethodName::Trpo => "TRPO",
            MethodName::R3f => "R3F",
            MethodName::Mesa => "MESA",
            MethodName::AsamTrpo => "ASAM+TRPO",
            MethodName::AsamR3f => "ASAM+R3F",
            MethodName::AsamMesa => "ASAM+MESA",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|m| m.as_str() == s || (s.contains('+') && m.as_str() == s.replace('+', "-")))
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(MethodName::as_str).collect();
                config_err(format!("unknown method `{s}`; expected one of: {}", names.join(", ")))
            })
    }

    /// Forward and backward passes per step as the paper states them (Tables 1–2); `None` where it states none.
    pub fn paper_passes(&self) -> Option<(u32, u32)> {
        match self {
            MethodName::Base => Some((1, 1)),
            MethodName::Sam | MethodName::Asam | MethodName::Fsam | MethodName::TramFisher => Some((2, 2)),
            MethodName::TramPrev | MethodName::TramPretrained | MethodName::TramX => Some((3, 2)),
            MethodName::Trpo | MethodName::R3f | MethodName::Mesa => Some((2, 1)),
            MethodName::TramEma | MethodName::AsamTrpo | MethodName::AsamR3f | MethodName::AsamMesa => None,
        }
    }
}

impl std::fmt::Display for MethodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
}

/// The paper's defaults (digest §2, §7).
pub mod defaults {
    /// SAM radius (B.2).
    pub const SAM_RHO: f64 = 0.05;
    /// ASAM radius (B.2).
    pub const ASAM_RHO: f64 = 0.5;
    /// ASAM's T = |θ| + η offset: the official ASAM value (the paper states none).
    pub const ASAM_ETA: f64 = 0.01;
    /// FSAM γ and η (B.2).
    pub const FSAM_GAMMA: f64 = 0.1;
    pub const FSAM_ETA: f64 = 0.1;
    /// R3F noise σ (B.2). TRAM-x and TRAM-Fisher use it too: the paper gives them no σ, and sharing R3F's
    /// makes TRAM-x measure the same neighbourhood as the R3F baseline it is compared with.
    pub const SIGMA: f64 = 0.1;
    /// MESA's EMA decay (B.2), also the default for TRAM-EMA.
    pub const EMA_DECAY: f64 = 0.999;
    /// Weight λ of every trust-region regulariser (B.2).
    pub const LAMBDA: f64 = 0.1;
}

/// What the divergence is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Target {
    /// θ_{t−1}, the parameters the previous step started from.
    PreviousStep,
    /// θ_0, the parameters at the start of training.
    Pretrained,
    /// EMA ← decay · EMA + (1 − decay) · θ after every step, starting from θ_0.
    Ema { decay: f64 },
    /// The current model on noised inputs.
    InputNoise(NoiseSpec),
}

impl Target {
    /// Whether the target is a copy of the parameters (and so costs their memory).
    pub fn holds_parameters(&self) -> bool {
        !matches!(self, Target::InputNoise(_))
    }
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
        }
    }

    /// Keys that apply to this method.
    fn allowed(&self) -> &'static [&'static str] {
        use MethodName::*;
        const TR: [&str; 3] = ["divergence", "reduction", "scale"];
        match self.name {
            Base => &[],
            Sam => &["rho"],
            Asam => &["rho", "eta"],
            Fsam => &["gamma", "eta"],
            TramPrev | TramPretrained => &["eta", "max_radius", TR[0], TR[1], TR[2]],
            TramEma => &["eta", "max_radius", "decay", TR[0], TR[1], TR[2]],
            TramX => &["eta", "max_radius", "sigma", "noise", TR[0], TR[1], TR[2]],
            TramFisher => &["gamma", "eta", "sigma", "noise"],
            Trpo => &["lambda", TR[0], TR[1], TR[2]],
            R3f => &["lambda", "sigma", "noise", TR[0], TR[1], TR[2]],
            Mesa => &["lambda", "decay", TR[0], TR[1], TR[2]],
            AsamTrpo => &["rho", "eta", "lambda", TR[0], TR[1], TR[2]],
            AsamR3f => &["rho", "eta", "lambda", "sigma", "noise", TR[0], TR[1], TR[2]],
            AsamMesa => &["rho", "eta", "lambda", "decay", TR[0], TR[1], TR[2]],
        }
    }

    fn given(&self) -> Vec<&'static str> {
        let mut v = vec![];
        let mut add = |set: bool, k| {
            if set {
                v.push(k)
            }
        };
        add(self.rho.is_some(), "rho");
        add(self.eta.is_some(), "eta");
        add(self.gamma.is_some(), "gamma");
        add(self.sigma.is_some(), "sigma");
        add(self.noise.is_some(), "noise");
        add(self.decay.is_some(), "decay");
        add(self.lambda.is_some(), "lambda");
        add(self.divergence.is_some(), "divergence");
        add(self.reduction.is_some(), "reduction");
        add(self.scale.is_some(), "scale");
        add(self.max_radius.is_some(), "max_radius");
        v
    }

    /// Checks the config and resolves it with the paper's defaults.
    pub fn build(&self) -> Result<Method> {
        use defaults::*;
        use MethodName::*;
        let allowed = self.allowed();
        if let Some(k) = self.given().into_iter().find(|k| !allowed.contains(k)) {
            return Err(config_err(format!(
                "key `{k}` does not apply to method `{}` (it takes: {})",
                self.name,
                if allowed.is_empty() { "no keys".to_string() } else { allowed.join(", ") }
            )));
        }
        let nonneg = |key: &str, v: Option<f64>, default: f64| -> Result<f64> {
            let v = v.unwrap_or(default);
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(config_err(format!("method `{}`: {key} must be finite and >= 0, got {v}", self.name)))
            }
        };
        let decay = || -> Result<f64> {
            let d = self.decay.unwrap_or(EMA_DECAY);
            if (0.0..=1.0).contains(&d) {
                Ok(d)
            } else {
                Err(config_err(format!("method `{}`: EMA decay must be in [0, 1], got {d}", self.name)))
            }
        };
        let noise = || -> Result<NoiseSpec> {
            let spec = NoiseSpec { sigma: nonneg("sigma", self.sigma, SIGMA)?, kind: self.noise.unwrap_or_default() };
            spec.validate()?;
            Ok(spec)
        };
        let divergence = |default: DivergenceKind| -> Result<Divergence> {
            Ok(Divergence {
                kind: self.divergence.unwrap_or(default),
                reduction: self.reduction.unwrap_or_default(),
                scale: nonneg("scale", self.scale, 1.0)?,
            })
        };
        let max_radius = match self.max_radius {
            Some(r) => Some(nonneg("max_radius", Some(r), 0.0)?),
            None => None,
        };
        let eta = |default| nonneg("eta", self.eta, default);
        let asam =
            || -> Result<Ascent> { Ok(Ascent::Asam { rho: nonneg("rho", self.rho, ASAM_RHO)?, eta: eta(ASAM_ETA)? }) };
        let tram = || -> Result<Ascent> { Ok(Ascent::Tram { eta: eta(ASAM_ETA)?, max_radius }) };
        let radius = |target| -> Result<Option<TrustRegion>> {
            Ok(Some(TrustRegion { target, divergence: divergence(DivergenceKind::KlForward)?, role: Role::Radius }))
        };
        let regulariser = |target, default_div| -> Result<Option<TrustRegion>> {
            Ok(Some(TrustRegion {
                target,
                divergence: divergence(default_div)?,
                role: Role::Regulariser { lambda: nonneg("lambda", self.lambda, LAMBDA)? },
            }))
        };
        let fwd = DivergenceKind::KlForward;
        let sym = DivergenceKind::KlSymmetric;
        let (ascent, trust_region, ascent_noise) = match self.name {
            Base => (None, None, None),
            Sam => (Some(Ascent::Sam { rho: nonneg("rho", self.rho, SAM_RHO)? }), None, None),
            Asam => (Some(asam()?), None, None),
            Fsam => (
                Some(Ascent::Fisher { gamma: nonneg("gamma", self.gamma, FSAM_GAMMA)?, eta: eta(FSAM_ETA)? }),
                None,
                None,
            ),
            TramPrev => (Some(tram()?), radius(Target::PreviousStep)?, None),
            TramPretrained => (Some(tram()?), radius(Target::Pretrained)?, None),
            TramEma => (Some(tram()?), radius(Target::Ema { decay: decay()? })?, None),
            TramX => (Some(tram()?), radius(Target::InputNoise(noise()?))?, None),
            TramFisher => (
                Some(Ascent::Fisher { gamma: nonneg("gamma", self.gamma, FSAM_GAMMA)?, eta: eta(FSAM_ETA)? }),
                None,
                Some(noise()?),
            ),
            Trpo => (None, regulariser(Target::PreviousStep, fwd)?, None),
            R3f => (None, regulariser(Target::InputNoise(noise()?), sym)?, None),
            Mesa => (None, regulariser(Target::Ema { decay: decay()? }, fwd)?, None),
            AsamTrpo => (Some(asam()?), regulariser(Target::PreviousStep, fwd)?, None),
            AsamR3f => (Some(asam()?), regulariser(Target::InputNoise(noise()?), sym)?, None),
            AsamMesa => (Some(asam()?), regulariser(Target::Ema { decay: decay()? }, fwd)?, None),
        };
        Ok(Method { name: self.name, ascent, trust_region, ascent_noise })
    }
}

impl Method {
    /// Short descriptions for tables: (trust-region measurement, ε rule, ascent domain).
    pub fn describe(&self) -> (String, String, String) {
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
            (None, Some(n)) => format!("F̂(x+z; θ), z~N(0, {}²)", n.sigma),
            (None, None) => "—".to_string(),
        };
        let (rule, domain) = match (&self.ascent, &self.trust_region) {
            (None, _) => ("—".to_string(), "—".to_string()),
            (Some(Ascent::Sam { rho }), _) => ("ρ·g/‖g‖".to_string(), format!("ρ-ball, ρ={rho}")),
            (Some(Ascent::Asam { rho, eta }), _) => ("Eq. 2 (ASAM)".to_string(), format!("ρ-ball, ρ={rho}, η={eta}")),
            (Some(Ascent::Fisher { gamma, eta }), _) => {
                ("Eq. 8 (Fisher)".to_string(), format!("F̂-ellipse, γ={gamma}, η={eta}"))
            }
            (Some(Ascent::Tram { .. }), _) => ("Eq. 7 (TRAM)".to_string(), "d-ball".to_string()),
        };
        (measure, rule, domain)
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
        assert!(err("name = \"sam\"\nsigma = 0.1").contains("key `sigma` does not apply to method `sam`"));
        assert!(err("name = \"tram-prev\"\ndivergence = \"kl-sideways\"").contains("unknown variant `kl-sideways`"));
        assert!(err("name = \"sam\"\nrhoo = 0.1").contains("unknown field `rhoo`"));
        assert!(MethodName::parse("tram").unwrap_err().to_string().contains("tram-prev"));
        assert_eq!(MethodName::parse("asam+r3f").unwrap(), MethodName::AsamR3f);
    }

    #[test]
    fn overrides_apply() {
        let cfg: MethodConfig = toml::from_str(
            "name = \"tram-x\"\nsigma = 0.02\nnoise = \"uniform\"\ndivergence = \"kl-symmetric\"\nmax_radius = 0.5",
        )
        .unwrap();
        let m = cfg.build().unwrap();
        let tr = m.trust_region.unwrap();
        assert_eq!(tr.target, Target::InputNoise(NoiseSpec { sigma: 0.02, kind: NoiseKind::Uniform }));
        assert_eq!(tr.divergence.kind, DivergenceKind::KlSymmetric);
        assert_eq!(m.ascent, Some(Ascent::Tram { eta: 0.01, max_radius: Some(0.5) }));
    }
}
