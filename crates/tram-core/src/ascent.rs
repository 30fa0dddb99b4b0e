//! Perturbation rules: the ascent step ε of SAM-style methods, computed from the pass-1 gradient g.
//!
//! Every rule has the form ε = r · (a ⊙ g) / N with a radius r, an elementwise scaling a and a normaliser N,
//! so that ε lies on the sphere of radius r in the rule's own norm:
//!
//! | rule | a | N | norm in which ‖ε‖ = r |
//! |---|---|---|---|
//! | SAM (Foret et al.) | 1 | ‖g‖₂ | ‖ε‖₂ |
//! | ASAM (Eq. 2), TRAM (Eq. 7) | T², T = \|θ\| + η | ‖T ⊙ g‖₂ | ‖ε / T‖₂ |
//! | Fisher-SAM (Eq. 8) | 1 / f, f = 1 + η g² | sqrt(Σ g² / f) | sqrt(Σ f ε²) |
//!
//! TRAM is ASAM with r = d, the trust-region divergence (Eq. 7): ε is proportional to the gradient, unlike the
//! released code, which drops g from the numerator. Fisher-SAM uses the diagonal Fisher estimate
//! F̂ = diag(g²) of Eq. 9 in Kim et al.'s damped form f = 1 + η F̂, so η = 0 gives SAM exactly.
//! Parameters without a gradient get no ε and count in no norm.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// An ascent rule with its hyperparameters (the radius of TRAM comes from the divergence at each step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Ascent {
    Sam { rho: f64 },
    Asam { rho: f64, eta: f64 },
    Fisher { gamma: f64, eta: f64 },
    /// Radius d each step, optionally capped at `max_radius` (the bound d ≤ ρ of §3).
    Tram { eta: f64, max_radius: Option<f64> },
}

/// The outcome of an ascent rule.
#[derive(Debug)]
pub struct Perturbation {
    /// ε per parameter; `None` where the parameter has no gradient.
    pub eps: Vec<Option<Tensor>>,
    /// The radius r used (a scalar tensor).
    pub radius: Tensor,
    /// ‖g‖₂ over all parameters with a gradient.
    pub grad_norm: Tensor,
}

const TINY: f64 = 1e-12;

impl Ascent {
    /// The fixed radius of the rule, if it has one (TRAM's comes from d).
    pub fn fixed_radius(&self) -> Option<f64> {
        match *self {
            Ascent::Sam { rho } | Ascent::Asam { rho, .. } => Some(rho),
            Ascent::Fisher { gamma, .. } => Some(gamma),
            Ascent::Tram { .. } => None,
        }
    }

    /// ε from parameters θ and gradients g. `radius` must be given for TRAM (the divergence d) and is
    /// ignored by the other rules.
    pub fn perturbation(&self, params: &[Tensor], grads: &[Option<Tensor>], radius: Option<&Tensor>) -> Perturbation {
        tch::no_grad(|| {
            let kind = params.first().map(Tensor::kind).unwrap_or(Kind::Float);
            let device = params.first().map(Tensor::device).unwrap_or(tch::Device::Cpu);
            let scalar = |v: f64| Tensor::from(v).to_kind(kind).to_device(device);
            let radius = match (self, radius) {
                (Ascent::Tram { max_radius, .. }, Some(d)) => {
                    let d = d.detach().to_kind(kind).to_device(device);
                    match max_radius {
                        Some(cap) => d.clamp_max(*cap),
                        None => d,
                    }
                }
                (Ascent::Tram { .. }, None) => panic!("the TRAM ascent rule needs the divergence as its radius"),
                _ => scalar(self.fixed_radius().expect("fixed radius")),
            };
            // a ⊙ g per parameter, and the terms whose sum is N².
            let mut scaled = Vec::with_capacity(params.len());
            let mut norm_sq = scalar(0.0);
            let mut grad_sq = scalar(0.0);
            for (p, g) in params.iter().zip(grads) {
                let Some(g) = g else {
                    scaled.push(None);
                    continue;
                };
                grad_sq += g.square().sum(kind);
                let (ag, n2) = match *self {
                    Ascent::Sam { .. } => (g.shallow_clone(), g.square().sum(kind)),
                    Ascent::Asam { eta, .. } | Ascent::Tram { eta, .. } => {
                        let t = p.abs() + eta;
                        let tg = &t * g;
                        let n2 = tg.square().sum(kind);
                        (t * tg, n2)
                    }
                    Ascent::Fisher { eta, .. } => {
                        let g_over_f = g / (g.square() * eta + 1.0);
                        let n2 = (&g_over_f * g).sum(kind);
                        (g_over_f, n2)
                    }
                };
                norm_sq += n2;
                scaled.push(Some(ag));
            }
            let coef = &radius / (norm_sq.sqrt() + TINY);
            let eps = scaled.into_iter().map(|s| s.map(|s| s * &coef)).collect();
            Perturbation { eps, radius, grad_norm: grad_sq.sqrt() }
        })
    }

    /// ‖ε‖ in the rule's own norm (equal to the radius unless g = 0); used by tests and reports.
    pub fn rule_norm(&self, params: &[Tensor], grads: &[Option<Tensor>], eps: &[Option<Tensor>]) -> f64 {
        tch::no_grad(|| {
            let mut total = 0.0;
            for ((p, g), e) in params.iter().zip(grads).zip(eps) {
                let (Some(g), Some(e)) = (g, e) else { continue };
                let term = match *self {
                    Ascent::Sam { .. } => e.square(),
                    Ascent::Asam { eta, .. } | Ascent::Tram { eta, .. } => (e / (p.abs() + eta)).square(),
                    Ascent::Fisher { eta, .. } => e.square() * (g.square() * eta + 1.0),
                };
                total += term.sum(Kind::Double).double_value(&[]);
            }
            total.sqrt()
        })
    }
}

/// ‖ε‖₂ over all parameters.
pub fn l2_norm(ts: &[Option<Tensor>]) -> f64 {
    ts.iter().flatten().map(|t| t.square().sum(Kind::Double).double_value(&[])).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn setup() -> (Vec<Tensor>, Vec<Option<Tensor>>) {
        tch::manual_seed(7);
        let opts = (Kind::Double, Device::Cpu);
        let params = vec![Tensor::randn([3, 4], opts), Tensor::randn([4], opts), Tensor::randn([2], opts)];
        let grads = vec![Some(Tensor::randn([3, 4], opts)), Some(Tensor::randn([4], opts)), None];
        (params, grads)
    }

    fn rules() -> Vec<Ascent> {
        vec![
            Ascent::Sam { rho: 0.05 },
            Ascent::Asam { rho: 0.5, eta: 0.01 },
            Ascent::Fisher { gamma: 0.1, eta: 0.1 },
            Ascent::Tram { eta: 0.01, max_radius: None },
        ]
    }

    #[test]
    fn eps_lies_on_the_sphere_of_the_rule_norm() {
        let (p, g) = setup();
        let d = Tensor::from(0.37f64);
        for rule in rules() {
            let out = rule.perturbation(&p, &g, Some(&d));
            let r = out.radius.double_value(&[]);
            let n = rule.rule_norm(&p, &g, &out.eps);
            assert!((n - r).abs() < 1e-10 * r.max(1.0), "{rule:?}: norm {n} radius {r}");
            assert!(out.eps[2].is_none(), "a parameter without gradient gets no ε");
        }
    }

    #[test]
    fn flipping_the_gradient_flips_eps() {
        let (p, g) = setup();
        let neg: Vec<Option<Tensor>> = g.iter().map(|g| g.as_ref().map(|g| -g)).collect();
        let d = Tensor::from(0.2f64);
        for rule in rules() {
            let a = rule.perturbation(&p, &g, Some(&d));
            let b = rule.perturbation(&p, &neg, Some(&d));
            for (x, y) in a.eps.iter().zip(&b.eps) {
                if let (Some(x), Some(y)) = (x, y) {
                    assert!(x.allclose(&(-y), 0.0, 1e-15, false), "{rule:?}");
                }
            }
        }
    }

    #[test]
    fn tram_with_fixed_d_equals_asam_with_rho_d() {
        let (p, g) = setup();
        let d = 0.123;
        let tram = Ascent::Tram { eta: 0.01, max_radius: None }.perturbation(&p, &g, Some(&Tensor::from(d)));
        let asam = Ascent::Asam { rho: d, eta: 0.01 }.perturbation(&p, &g, None);
        for (x, y) in tram.eps.iter().zip(&asam.eps) {
            if let (Some(x), Some(y)) = (x, y) {
                assert!(x.equal(y));
            }
        }
        // With a cap below d, the radius is the cap.
        let capped = Ascent::Tram { eta: 0.01, max_radius: Some(0.05) }.perturbation(&p, &g, Some(&Tensor::from(d)));
        assert_eq!(capped.radius.double_value(&[]), 0.05);
    }

    #[test]
    fn tram_eps_is_proportional_to_the_gradient() {
        // The released code's ε = d θ²/‖θ g‖ ignores g's direction; Eq. 7 does not.
        let (p, g) = setup();
        let out = Ascent::Tram { eta: 0.0, max_radius: None }.perturbation(&p, &g, Some(&Tensor::from(1.0f64)));
        let ratio = out.eps[0].as_ref().unwrap() / (p[0].square() * g[0].as_ref().unwrap());
        let r = ratio.flatten(0, -1);
        assert!(r.allclose(&r.mean(Kind::Double).expand_as(&r), 1e-9, 1e-12, false));
    }

    #[test]
    fn fisher_with_eta_zero_is_sam() {
        let (p, g) = setup();
        let f = Ascent::Fisher { gamma: 0.05, eta: 0.0 }.perturbation(&p, &g, None);
        let s = Ascent::Sam { rho: 0.05 }.perturbation(&p, &g, None);
        for (x, y) in f.eps.iter().zip(&s.eps) {
            if let (Some(x), Some(y)) = (x, y) {
                assert!(x.allclose(y, 0.0, 1e-15, false));
            }
        }
    }

    #[test]
    fn zero_gradient_gives_zero_eps() {
        let (p, _) = setup();
        let g: Vec<Option<Tensor>> = p.iter().map(|p| Some(p.zeros_like())).collect();
        for rule in rules() {
            let out = rule.perturbation(&p, &g, Some(&Tensor::from(0.3f64)));
            assert_eq!(l2_norm(&out.eps), 0.0);
        }
    }
}
