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
use tch::Tensor;

/// An ascent rule with its hyperparameters (the radius of TRAM comes from the divergence at each step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Ascent {
    Sam {
        rho: f64,
    },
    Asam {
        rho: f64,
        eta: f64,
    },
    Fisher {
        gamma: f64,
        eta: f64,
    },
    /// Radius d each step, optionally capped at `max_radius` (the bound d ≤ ρ of arXiv 2310.03646 v2, §3).
    Tram {
        eta: f64,
        max_radius: Option<f64>,
        #[serde(default)]
        eps: TramEps,
    },
}

/// Which ε TRAM takes with its radius d.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TramEps {
    /// Eq. 7: ε = d·T²⊙g / ‖T⊙g‖, along the gradient (ASAM's rule with ρ ← d).
    #[default]
    Paper,
    /// The released code's ε = d·T² / ‖T⊙g‖: the gradient's direction is dropped, only its norm remains in the
    /// denominator, so ε is a shift towards larger |θ| whatever the loss does there (the released code has no
    /// η: set `eta = 0` to reproduce it exactly).
    ReleasedCode,
}

/// The outcome of an ascent rule: ε = `coef` · `direction` (the scaled gradient a ⊙ g), kept factored so that
/// applying it needs no extra tensor per parameter.
#[derive(Debug)]
pub struct Perturbation {
    /// a ⊙ g per parameter; `None` where the parameter has no gradient.
    pub direction: Vec<Option<Tensor>>,
    /// r / N, a scalar tensor.
    pub coef: Tensor,
    /// The radius r used (a scalar tensor).
    pub radius: Tensor,
    /// ‖g‖₂ over all parameters with a gradient (a scalar tensor).
    pub grad_norm: Tensor,
    /// ‖ε‖₂ (a scalar tensor).
    pub eps_norm: Tensor,
}

impl Perturbation {
    /// ε per parameter, materialised.
    pub fn eps(&self) -> Vec<Option<Tensor>> {
        tch::no_grad(|| self.direction.iter().map(|d| d.as_ref().map(|d| d * &self.coef)).collect())
    }

    /// θ ← θ + ε, in place.
    pub fn apply(&self, params: &mut [Tensor]) {
        tch::no_grad(|| {
            for (p, d) in params.iter_mut().zip(&self.direction) {
                if let Some(d) = d {
                    let _ = p.addcmul_(d, &self.coef);
                }
            }
        })
    }
}

const TINY: f64 = 1e-12;

/// ‖(t_1, …, t_n)‖₂ as a scalar tensor, without a host round trip.
pub(crate) fn global_norm<'a>(ts: impl Iterator<Item = &'a Tensor>, like: &Tensor) -> Tensor {
    let norms: Vec<Tensor> = ts.map(|t| t.norm().to_kind(like.kind())).collect();
    if norms.is_empty() {
        return like.zeros_like();
    }
    Tensor::stack(&norms, 0).norm()
}

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
            let like = Tensor::zeros([], (params[0].kind(), params[0].device()));
            let radius = match (self, radius) {
                (Ascent::Tram { max_radius, .. }, Some(d)) => {
                    let d = d.detach().to_kind(like.kind()).to_device(like.device());
                    match max_radius {
                        Some(cap) => d.clamp_max(*cap),
                        None => d,
                    }
                }
                (Ascent::Tram { .. }, None) => panic!("the TRAM ascent rule needs the divergence as its radius"),
                _ => like.fill(self.fixed_radius().expect("fixed radius")),
            };
            let grad_norm = global_norm(grads.iter().flatten(), &like);
            // a ⊙ g per parameter, and the per-parameter terms of N (N² = Σ terms² for SAM/ASAM, Σ terms for Fisher).
            let mut direction = Vec::with_capacity(params.len());
            let mut n_terms = Vec::new();
            for (p, g) in params.iter().zip(grads) {
                let Some(g) = g else {
                    direction.push(None);
                    continue;
                };
                let ag = match *self {
                    Ascent::Sam { .. } => g.shallow_clone(),
                    Ascent::Tram { eta, eps: TramEps::ReleasedCode, .. } => {
                        let t = p.abs() + eta;
                        n_terms.push((&t * g).norm());
                        t.square()
                    }
                    Ascent::Asam { eta, .. } | Ascent::Tram { eta, .. } => {
                        let t = p.abs() + eta;
                        let tg = &t * g;
                        n_terms.push(tg.norm());
                        t * tg
                    }
                    Ascent::Fisher { eta, .. } => {
                        let g_over_f = g / (g.square() * eta + 1.0);
                        n_terms.push((&g_over_f * g).sum(g.kind()));
                        g_over_f
                    }
                };
                direction.push(Some(ag));
            }
            let n = match *self {
                Ascent::Sam { .. } => grad_norm.shallow_clone(),
                Ascent::Asam { .. } | Ascent::Tram { .. } => global_norm(n_terms.iter(), &like),
                Ascent::Fisher { .. } => Tensor::stack(&n_terms, 0).sum(like.kind()).sqrt(),
            };
            let coef = &radius / (n + TINY);
            let eps_norm = global_norm(direction.iter().flatten(), &like) * &coef;
            Perturbation { direction, coef, radius, grad_norm, eps_norm }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// ‖ε‖ in the rule's own norm (equal to the radius unless g = 0).
    fn rule_norm(rule: &Ascent, params: &[Tensor], grads: &[Option<Tensor>], eps: &[Option<Tensor>]) -> f64 {
        let mut total = 0.0;
        for ((p, g), e) in params.iter().zip(grads).zip(eps) {
            let (Some(g), Some(e)) = (g, e) else { continue };
            let term = match *rule {
                Ascent::Sam { .. } => e.square(),
                Ascent::Asam { eta, .. } | Ascent::Tram { eta, .. } => (e / (p.abs() + eta)).square(),
                Ascent::Fisher { eta, .. } => e.square() * (g.square() * eta + 1.0),
            };
            total += term.sum(Kind::Double).double_value(&[]);
        }
        total.sqrt()
    }

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
            Ascent::Tram { eta: 0.01, max_radius: None, eps: TramEps::Paper },
        ]
    }

    /// Asserts that `a` and `b` give ε to the same parameters and that `close` holds for each; returns how
    /// many parameters were compared.
    fn compare(a: &[Option<Tensor>], b: &[Option<Tensor>], close: impl Fn(&Tensor, &Tensor) -> bool) -> usize {
        assert_eq!(a.len(), b.len());
        let mut compared = 0;
        for (x, y) in a.iter().zip(b) {
            match (x, y) {
                (Some(x), Some(y)) => {
                    assert!(close(x, y), "{x} vs {y}");
                    compared += 1;
                }
                (None, None) => {}
                _ => panic!("ε for a parameter on one side only"),
            }
        }
        compared
    }

    fn values(t: &Option<Tensor>) -> Vec<f64> {
        Vec::<f64>::try_from(t.as_ref().expect("an ε").flatten(0, -1)).unwrap()
    }

    fn assert_near(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn eps_of_small_vectors_by_hand() {
        // θ = (1, −1) and g = (3, 4), plus a parameter without gradient; ε = r · a ⊙ g / N.
        let opts = (Kind::Double, Device::Cpu);
        let p = vec![Tensor::from_slice(&[1.0, -1.0]).to_kind(opts.0), Tensor::zeros([1], opts)];
        let g = vec![Some(Tensor::from_slice(&[3.0, 4.0]).to_kind(opts.0)), None];
        let eps = |rule: Ascent, d: Option<f64>| rule.perturbation(&p, &g, d.map(Tensor::from).as_ref()).eps();
        // SAM: ‖g‖ = 5, so ε = 0.5 · (3, 4) / 5.
        let sam = eps(Ascent::Sam { rho: 0.5 }, None);
        assert_near(&values(&sam[0]), &[0.3, 0.4]);
        assert!(sam[1].is_none());
        // ASAM, η = 1: T = (2, 2), T ⊙ g = (6, 8) of norm 10, T² ⊙ g = (12, 16), so ε = 0.5 · (12, 16) / 10.
        assert_near(&values(&eps(Ascent::Asam { rho: 0.5, eta: 1.0 }, None)[0]), &[0.6, 0.8]);
        // TRAM with d = 0.5 is that ASAM step (Eq. 7).
        assert_near(
            &values(&eps(Ascent::Tram { eta: 1.0, max_radius: None, eps: TramEps::Paper }, Some(0.5))[0]),
            &[0.6, 0.8],
        );
        // Fisher, η = 1/9: f = 1 + g²/9 = (2, 25/9), g/f = (1.5, 1.44), Σ g²/f = 4.5 + 5.76 = 10.26.
        let fisher = values(&eps(Ascent::Fisher { gamma: 0.1, eta: 1.0 / 9.0 }, None)[0]);
        let n = 10.26f64.sqrt();
        assert_near(&fisher, &[0.1 * 1.5 / n, 0.1 * 1.44 / n]);
    }

    #[test]
    fn eps_lies_on_the_sphere_of_the_rule_norm() {
        let (p, g) = setup();
        let d = Tensor::from(0.37f64);
        for rule in rules() {
            let out = rule.perturbation(&p, &g, Some(&d));
            let r = out.radius.double_value(&[]);
            let n = rule_norm(&rule, &p, &g, &out.eps());
            assert!((n - r).abs() < 1e-10 * r.max(1.0), "{rule:?}: norm {n} radius {r}");
            assert!(out.eps()[2].is_none(), "a parameter without gradient gets no ε");
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
            let compared = compare(&a.eps(), &b.eps(), |x, y| x.allclose(&(-y), 0.0, 1e-15, false));
            assert_eq!(compared, 2, "{rule:?}");
        }
    }

    #[test]
    fn tram_with_fixed_d_equals_asam_with_rho_d() {
        let (p, g) = setup();
        let d = 0.123;
        let tram = Ascent::Tram { eta: 0.01, max_radius: None, eps: TramEps::Paper }.perturbation(
            &p,
            &g,
            Some(&Tensor::from(d)),
        );
        let asam = Ascent::Asam { rho: d, eta: 0.01 }.perturbation(&p, &g, None);
        assert_eq!(compare(&tram.eps(), &asam.eps(), |x, y| x.equal(y)), 2);
        // With a cap below d, the radius is the cap.
        let capped = Ascent::Tram { eta: 0.01, max_radius: Some(0.05), eps: TramEps::Paper }.perturbation(
            &p,
            &g,
            Some(&Tensor::from(d)),
        );
        assert_eq!(capped.radius.double_value(&[]), 0.05);
    }

    #[test]
    fn tram_eps_is_proportional_to_the_gradient() {
        // The released code's ε = d θ²/‖θ g‖ ignores g's direction; Eq. 7 does not.
        let (p, g) = setup();
        let out = Ascent::Tram { eta: 0.0, max_radius: None, eps: TramEps::Paper }.perturbation(
            &p,
            &g,
            Some(&Tensor::from(1.0f64)),
        );
        let ratio = out.eps()[0].as_ref().unwrap() / (p[0].square() * g[0].as_ref().unwrap());
        let r = ratio.flatten(0, -1);
        assert!(r.allclose(&r.mean(Kind::Double).expand_as(&r), 1e-9, 1e-12, false));
    }

    #[test]
    fn released_code_eps_drops_the_gradient_direction() {
        // ε = d·θ²/‖θ⊙g‖ (η = 0): the same whatever the sign of g, and exactly that formula.
        let (p, g) = setup();
        let rule = Ascent::Tram { eta: 0.0, max_radius: None, eps: TramEps::ReleasedCode };
        let d = 0.3f64;
        let out = rule.perturbation(&p, &g, Some(&Tensor::from(d)));
        let neg: Vec<Option<Tensor>> = g.iter().map(|g| g.as_ref().map(|g| -g)).collect();
        let flipped = rule.perturbation(&p, &neg, Some(&Tensor::from(d)));
        let norm: f64 = p
            .iter()
            .zip(&g)
            .filter_map(|(p, g)| g.as_ref().map(|g| (p * g).square().sum(Kind::Double).double_value(&[])))
            .sum::<f64>()
            .sqrt();
        let mut compared = 0;
        for ((e, f), (p, g)) in out.eps().iter().zip(&flipped.eps()).zip(p.iter().zip(&g)) {
            match (e, g) {
                (Some(e), Some(_)) => {
                    assert!(e.equal(f.as_ref().unwrap()), "independent of g's sign");
                    assert!(e.allclose(&(p.square() * (d / norm)), 1e-12, 1e-15, false));
                    compared += 1;
                }
                (None, None) => assert!(f.is_none()),
                _ => panic!("ε exactly where g exists"),
            }
        }
        assert_eq!(compared, 2);
        // Eq. 7 with the flipped gradient flips ε instead.
        let paper = Ascent::Tram { eta: 0.0, max_radius: None, eps: TramEps::Paper };
        let (a, b) =
            (paper.perturbation(&p, &g, Some(&Tensor::from(d))), paper.perturbation(&p, &neg, Some(&Tensor::from(d))));
        assert!(a.eps()[0].as_ref().unwrap().allclose(&-b.eps()[0].as_ref().unwrap(), 0.0, 1e-15, false));
    }

    #[test]
    fn fisher_with_eta_zero_is_sam() {
        let (p, g) = setup();
        let f = Ascent::Fisher { gamma: 0.05, eta: 0.0 }.perturbation(&p, &g, None);
        let s = Ascent::Sam { rho: 0.05 }.perturbation(&p, &g, None);
        assert_eq!(compare(&f.eps(), &s.eps(), |x, y| x.allclose(y, 0.0, 1e-15, false)), 2);
    }

    #[test]
    fn zero_gradient_gives_zero_eps() {
        let (p, _) = setup();
        let g: Vec<Option<Tensor>> = p.iter().map(|p| Some(p.zeros_like())).collect();
        for rule in rules() {
            let out = rule.perturbation(&p, &g, Some(&Tensor::from(0.3f64)));
            for e in out.eps() {
                let e = e.expect("every parameter has a (zero) gradient");
                assert!(e.equal(&e.zeros_like()), "{rule:?}: ε {e}");
            }
            assert_eq!(out.eps_norm.double_value(&[]), 0.0);
        }
    }
}
