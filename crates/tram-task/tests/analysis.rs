//! The paper's analyses against closed forms.
//!
//! Linear CKA: 1 for a representation with itself, invariant to orthogonal transforms, isotropic scaling and
//! offsets, equal to the independent sample-space (centred Gram matrix) formulation, small for unrelated and large
//! for related representations, float64 whatever the input.
//!
//! ε-sharpness on a separable quadratic `ℓ(x) = mean_j ½ Σ_i a_i (x_i − c_ji)²`, whose maximum over the box is
//! the corner away from the mean centre, and whose projected gradient ascent can be iterated by hand: the corner
//! and φ, the trajectory at the paper's tiny learning rate, the box, micro-batch weighting and cycling, and the
//! model left exactly as found.

use std::cell::{Cell, RefCell};

use tch::nn;
use tch::{Device, Kind, Tensor};
use tram_core::{InputNoise, Model};
use tram_task::kit::analysis::{epsilon_sharpness, linear_cka, SharpnessConfig, PAPER_EPSILON, PAPER_LR};
use tram_task::SplitMix64;

fn close(actual: f64, expected: f64, rel: f64) -> bool {
    (actual - expected).abs() <= rel * expected.abs().max(f64::MIN_POSITIVE)
}

fn assert_close(actual: f64, expected: f64, rel: f64, what: &str) {
    assert!(close(actual, expected, rel), "{what}: {actual} vs. {expected} (relative {rel})");
}

fn error_of<T: std::fmt::Debug>(r: tram_task::Result<T>) -> String {
    r.expect_err("an error").to_string()
}

// ---------------------------------------------------------------------------------------------------------------
// Linear CKA
// ---------------------------------------------------------------------------------------------------------------

/// Standard normal `[rows, cols]` float64 from a seeded SplitMix64 (Box–Muller), independent of torch's global
/// generator, so tests running in parallel see the same numbers.
fn gaussian(seed: u64, rows: i64, cols: i64) -> Tensor {
    let mut rng = SplitMix64(seed);
    let v: Vec<f64> = (0..rows * cols)
        .map(|_| {
            let (u1, u2) = (1.0 - rng.uniform(), rng.uniform());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        })
        .collect();
    Tensor::from_slice(&v).view([rows, cols])
}

fn orthogonal(seed: u64, p: i64) -> Tensor {
    let (q, _) = Tensor::linalg_qr(&gaussian(seed, p, p), "reduced");
    let identity = Tensor::eye(p, (Kind::Double, Device::Cpu));
    let err = (q.tr().matmul(&q) - identity).abs().max().double_value(&[]);
    assert!(err < 1e-12, "Q is orthogonal ({err})");
    q
}

/// Kornblith et al.'s sample-space form: centred Gram matrices `HKH`, `HLH`, their normalised inner product.
fn cka_by_gram_matrices(x: &Tensor, y: &Tensor) -> f64 {
    let n = x.size()[0];
    let h = Tensor::eye(n, (Kind::Double, Device::Cpu)) - 1.0 / n as f64;
    let k = h.matmul(&x.matmul(&x.tr())).matmul(&h);
    let l = h.matmul(&y.matmul(&y.tr())).matmul(&h);
    let inner = (&k * &l).sum(Kind::Double).double_value(&[]);
    inner / (k.norm().double_value(&[]) * l.norm().double_value(&[]))
}

fn cka(x: &Tensor, y: &Tensor) -> f64 {
    linear_cka(x, y).expect("CKA of valid inputs")
}

#[test]
fn cka_of_a_representation_with_itself_is_one() {
    for (seed, n, p) in [(1, 50, 8), (2, 10, 30), (3, 2, 1)] {
        let x = gaussian(seed, n, p);
        assert!((cka(&x, &x) - 1.0).abs() <= 1e-12, "n {n} p {p}: {}", cka(&x, &x));
    }
}

#[test]
fn cka_is_invariant_to_orthogonal_transforms_isotropic_scaling_and_offsets() {
    let x = gaussian(10, 40, 6);
    let y = x.matmul(&gaussian(11, 6, 5)) + gaussian(12, 40, 5) * 0.5;
    let reference = cka(&x, &y);
    assert!(reference > 0.1 && reference < 0.99, "a non-trivial reference value: {reference}");
    let cases = [
        ("X Q", cka(&x.matmul(&orthogonal(13, 6)), &y)),
        ("Y Q", cka(&x, &y.matmul(&orthogonal(14, 5)))),
        ("both rotated", cka(&x.matmul(&orthogonal(15, 6)), &y.matmul(&orthogonal(16, 5)))),
        ("3.7 X", cka(&(&x * 3.7), &y)),
        ("Y / 250", cka(&x, &(&y / 250.0))),
        ("X + 1 vᵀ", cka(&(&x + gaussian(17, 1, 6) * 10.0), &y)),
        ("Y + 1 vᵀ", cka(&x, &(&y - gaussian(18, 1, 5) * 3.0))),
    ];
    for (what, value) in cases {
        assert!((value - reference).abs() <= 1e-10, "{what}: {value} vs. {reference}");
    }
    // Not invariant to everything: an anisotropic scaling of the columns changes it.
    let anisotropic = cka(&(&x * Tensor::from_slice(&[1.0, 5.0, 0.2, 1.0, 1.0, 3.0])), &y);
    assert!((anisotropic - reference).abs() > 1e-3, "anisotropic scaling: {anisotropic} vs. {reference}");
}

#[test]
fn cka_lies_in_the_unit_interval_and_matches_the_sample_space_form() {
    for (seed, n, p1, p2) in [(20, 30, 4, 7), (21, 8, 20, 3), (22, 100, 16, 16), (23, 3, 1, 2)] {
        let x = gaussian(seed, n, p1) + 2.0;
        let y = gaussian(seed + 100, n, p2) * 0.3 + x.narrow(1, 0, 1);
        let value = cka(&x, &y);
        let gram = cka_by_gram_matrices(&x, &y);
        assert!((0.0..=1.0).contains(&value), "n {n}: {value}");
        assert!((value - gram).abs() <= 1e-10, "n {n} p {p1}/{p2}: {value} vs. Gram form {gram}");
        assert!((cka(&y, &x) - value).abs() <= 1e-12, "symmetric");
    }
}

#[test]
fn cka_separates_related_from_unrelated_representations() {
    let x = gaussian(30, 200, 10);
    let unrelated = cka(&x, &gaussian(31, 200, 10));
    let related = cka(&x, &(x.matmul(&gaussian(32, 10, 10)) + gaussian(33, 200, 10) * 0.1));
    assert!(unrelated < 0.15, "independent representations: {unrelated}");
    assert!(related > 0.5, "a linear map of X plus small noise: {related}");
}

#[test]
fn cka_computes_in_float64_whatever_the_input_dtype() {
    let x = gaussian(40, 64, 12).to_kind(Kind::Float);
    let y = (x.matmul(&gaussian(41, 12, 7).to_kind(Kind::Float)) + gaussian(42, 64, 7).to_kind(Kind::Float))
        .to_kind(Kind::Float);
    let in_f64 = cka(&x.to_kind(Kind::Double), &y.to_kind(Kind::Double));
    assert_eq!(cka(&x, &y), in_f64, "float32 input gives the float64 answer of the same values");
    let half = x.to_kind(Kind::BFloat16);
    assert_eq!(cka(&half, &y), cka(&half.to_kind(Kind::Double), &y), "bfloat16 too");
    // Inputs that require gradients are read, not differentiated.
    let tracked = x.set_requires_grad(true);
    assert_eq!(cka(&tracked, &y), cka(&x, &y));
}

#[test]
fn cka_rejects_inputs_it_cannot_measure() {
    let x = gaussian(50, 5, 3);
    let cases = [
        (linear_cka(&x.view([-1]), &x), "2-D"),
        (linear_cka(&x, &x.view([5, 3, 1])), "2-D"),
        (linear_cka(&x, &gaussian(51, 4, 3)), "X has 5 rows and Y 4"),
        (linear_cka(&x.narrow(0, 0, 1), &x.narrow(0, 0, 1)), "at least 2 examples"),
        (linear_cka(&Tensor::ones([5, 3], (Kind::Double, Device::Cpu)), &x), "X is the same for every example"),
        (linear_cka(&x, &(x.narrow(0, 2, 1).repeat([5, 1]) * 0.1)), "Y is the same for every example"),
        (linear_cka(&x, &(&x * f64::NAN)), "Y holds non-finite values"),
    ];
    for (result, expected) in cases {
        let message = error_of(result);
        assert!(message.contains(expected), "{message:?} should say {expected:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// ε-sharpness
// ---------------------------------------------------------------------------------------------------------------

/// The trainable coordinates: `w` [3] then `v` [2, 2] flattened.
const X0: [f64; 7] = [0.5, -1.2, 2.0, 0.3, -0.7, 1.5, -0.1];
/// Curvatures (a buffer of the model), small enough for the paper's learning rate to take many updates.
const A: [f64; 7] = [0.02, 0.05, 0.01, 0.03, 0.04, 0.015, 0.025];
/// Which side of `X0` every centre lies on: the ascent moves the other way.
const SIDE: [f64; 7] = [1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0];
/// Micro-batches of unequal size, so that weighting by examples matters.
const SIZES: [usize; 5] = [3, 5, 2, 6, 4];

/// `ℓ = mean_j ½ Σ_i a_i (x_i − c_ji)²` over a batch's centres `c` [n, 7]; it records the parameters every
/// forward pass sees, has a trainable parameter it never uses, and optionally dropout or NaN losses.
struct Quadratic {
    vs: nn::VarStore,
    w: Tensor,
    v: Tensor,
    a: Tensor,
    dropout: f64,
    nan_from_call: Option<usize>,
    calls: Cell<usize>,
    seen: RefCell<Vec<Vec<f64>>>,
}

struct Centres(Tensor);

impl Quadratic {
    fn new(kind: Kind) -> Self {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let mut w = root.zeros("w", &[3]);
        let mut v = root.zeros("v", &[2, 2]);
        let mut unused = root.zeros("unused", &[2]);
        let mut a = root.zeros_no_train("a", &[7]);
        // The kind first, then the values, so that float64 values are not rounded through float32.
        vs.set_kind(kind);
        tch::no_grad(|| {
            w.copy_(&Tensor::from_slice(&X0[..3]));
            v.copy_(&Tensor::from_slice(&X0[3..]).view([2, 2]));
            unused.copy_(&Tensor::from_slice(&[0.25, -4.0]));
            a.copy_(&Tensor::from_slice(&A));
        });
        Self { vs, w, v, a, dropout: 0.0, nan_from_call: None, calls: Cell::new(0), seen: RefCell::new(vec![]) }
    }

    fn parameters(&self) -> Tensor {
        Tensor::cat(&[self.w.shallow_clone(), self.v.view([-1])], 0)
    }

    fn last_seen(&self) -> Vec<f64> {
        self.seen.borrow().last().expect("a forward pass").clone()
    }
}

impl Model for Quadratic {
    type Batch = Centres;
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn forward(&self, batch: &Centres, train: bool, _noise: Option<&InputNoise>) -> Tensor {
        let call = self.calls.get();
        self.calls.set(call + 1);
        let x = self.parameters();
        self.seen.borrow_mut().push(Vec::<f64>::try_from(x.detach().to_kind(Kind::Double)).expect("7 numbers"));
        let d = (x.unsqueeze(0) - &batch.0).dropout(self.dropout, train);
        if self.nan_from_call.is_some_and(|k| call >= k) {
            d * f64::NAN
        } else {
            d
        }
    }
    fn loss(&self, d: &Tensor, _batch: &Centres) -> Tensor {
        (d.square() * &self.a).sum_dim_intlist(1, false, None).mean(None) * 0.5
    }
    fn batch_size(&self, batch: &Centres) -> usize {
        batch.0.size()[0] as usize
    }
}

/// Centres `c_ji = X0_i − SIDE_i (0.2 + 0.3 u)`, one `Vec` of rows per micro-batch.
fn centres(sizes: &[usize]) -> Vec<Vec<[f64; 7]>> {
    let mut rng = SplitMix64(7);
    sizes
        .iter()
        .map(|&n| (0..n).map(|_| std::array::from_fn(|i| X0[i] - SIDE[i] * (0.2 + 0.3 * rng.uniform()))).collect())
        .collect()
}

fn batches(data: &[Vec<[f64; 7]>], kind: Kind) -> Vec<Centres> {
    data.iter().map(|rows| Centres(Tensor::from_slice(&rows.concat()).view([-1, 7]).to_kind(kind))).collect()
}

/// The whole set's loss at `x`, by hand.
fn loss_at(x: &[f64], data: &[Vec<[f64; 7]>]) -> f64 {
    let rows: Vec<&[f64; 7]> = data.iter().flatten().collect();
    let sum: f64 = rows.iter().map(|c| (0..7).map(|i| 0.5 * A[i] * (x[i] - c[i]).powi(2)).sum::<f64>()).sum();
    sum / rows.len() as f64
}

/// The example-weighted mean centre of some micro-batches (repeats count again).
fn mean_centre(data: &[Vec<[f64; 7]>], group: &[usize]) -> [f64; 7] {
    let rows: Vec<&[f64; 7]> = group.iter().flat_map(|&k| &data[k]).collect();
    std::array::from_fn(|i| rows.iter().map(|c| c[i]).sum::<f64>() / rows.len() as f64)
}

fn half_width(epsilon: f64) -> [f64; 7] {
    std::array::from_fn(|i| epsilon * (X0[i].abs() + 1.0))
}

/// The maximiser over the box: per coordinate, the end farther from the whole set's mean centre.
fn corner(data: &[Vec<[f64; 7]>], epsilon: f64) -> [f64; 7] {
    let (c, h) = (mean_centre(data, &(0..data.len()).collect::<Vec<_>>()), half_width(epsilon));
    std::array::from_fn(|i| X0[i] + (X0[i] - c[i]).signum() * h[i])
}

/// Projected gradient ascent by hand: update `k` uses the next `accumulate` micro-batches cyclically; the
/// gradient of the group's mean loss is `a_i (x_i − c̄_i)`. Returns the iterate after each update count asked.
fn ascent_by_hand(data: &[Vec<[f64; 7]>], config: &SharpnessConfig) -> Vec<[f64; 7]> {
    let (mut x, h, mut next) = (X0, half_width(config.epsilon), 0);
    let mut out = vec![];
    for step in 1..=*config.evaluate_at.last().expect("steps") {
        let group: Vec<usize> = (0..config.accumulate).map(|k| (next + k) % data.len()).collect();
        next = (next + config.accumulate) % data.len();
        let c = mean_centre(data, &group);
        for i in 0..7 {
            x[i] = (x[i] + config.lr * A[i] * (x[i] - c[i])).clamp(X0[i] - h[i], X0[i] + h[i]);
        }
        if config.evaluate_at.contains(&step) {
            out.push(x);
        }
    }
    out
}

fn phi(max_loss: f64, base: f64) -> f64 {
    (max_loss - base) / (1.0 + base) * 100.0
}

fn assert_in_box(model: &Quadratic, epsilon: f64) {
    let h = half_width(epsilon);
    for (k, x) in model.seen.borrow().iter().enumerate() {
        for i in 0..7 {
            assert!(
                x[i] >= X0[i] - h[i] && x[i] <= X0[i] + h[i],
                "forward pass {k} saw x_{i} = {} outside [{}, {}]",
                x[i],
                X0[i] - h[i],
                X0[i] + h[i]
            );
        }
    }
}

fn bits(t: &Tensor) -> Vec<u64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).view([-1])).expect("numbers").iter().map(|v| v.to_bits()).collect()
}

/// Every variable of the model by name, as bits.
fn variable_bits(model: &Quadratic) -> Vec<(String, Vec<u64>, bool)> {
    let mut named: Vec<_> = model.vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(name, t)| (name, bits(&t), t.requires_grad())).collect()
}

#[test]
fn a_large_learning_rate_reaches_the_closed_form_corner_without_leaving_the_box() {
    let data = centres(&SIZES);
    let model = Quadratic::new(Kind::Double);
    let config = SharpnessConfig { lr: 1e4, evaluate_at: vec![0, 1, 3], ..SharpnessConfig::paper(vec![]) };
    let result = epsilon_sharpness(&model, &batches(&data, Kind::Double), &config).expect("sharpness");

    let base = loss_at(&X0, &data);
    let best = corner(&data, PAPER_EPSILON);
    let max_loss = loss_at(&best, &data);
    assert!(max_loss > base, "the corner is above the base: {max_loss} vs. {base}");
    assert_eq!(result.examples, 20);
    assert_close(result.base_loss, base, 1e-12, "ℓ(x)");
    let steps: Vec<usize> = result.points.iter().map(|p| p.steps).collect();
    assert_eq!(steps, [0, 1, 3]);
    assert_eq!((result.points[0].loss, result.points[0].sharpness), (result.base_loss, 0.0), "no update, no rise");
    for p in &result.points[1..] {
        assert_close(p.loss, max_loss, 1e-9, "loss at the corner");
        assert_close(p.max_loss, max_loss, 1e-9, "max loss");
        assert_close(p.sharpness, phi(max_loss, base), 1e-9, "φ");
    }
    assert_eq!(result.last().steps, 3);
    assert!(result.last().sharpness > 0.0);
    assert_in_box(&model, PAPER_EPSILON);
    let seen = model.last_seen();
    for i in 0..7 {
        assert!((seen[i] - best[i]).abs() <= 1e-15, "x_{i} at the corner: {} vs. {}", seen[i], best[i]);
    }
}

#[test]
fn the_paper_settings_climb_monotonically_along_the_hand_iterated_ascent() {
    let data = centres(&SIZES);
    let model = Quadratic::new(Kind::Double);
    // 5 micro-batches, 4 per update: the groups cycle through the batches and wrap around.
    let config = SharpnessConfig::paper(vec![1, 2, 5, 20, 50, 90, 200]);
    let result = epsilon_sharpness(&model, &batches(&data, Kind::Double), &config).expect("sharpness");

    let base = loss_at(&X0, &data);
    let best = corner(&data, PAPER_EPSILON);
    let max_loss = loss_at(&best, &data);
    let by_hand = ascent_by_hand(&data, &config);
    assert_eq!(by_hand.last(), Some(&best), "the hand-iterated ascent reaches the corner by 200 updates");
    assert_ne!(by_hand[5], best, "but not by 90, so the trajectory shows the climb");
    for (p, x) in result.points.iter().zip(&by_hand) {
        assert_close(p.loss, loss_at(x, &data), 1e-9, &format!("loss after {} updates", p.steps));
        assert!(p.max_loss <= max_loss * (1.0 + 1e-12), "at most the box's maximum: {} vs. {max_loss}", p.max_loss);
        assert_close(p.sharpness, phi(p.max_loss, result.base_loss), 1e-12, "φ from the max loss");
    }
    for w in result.points.windows(2) {
        assert!(w[1].loss > w[0].loss, "the ascent climbs: {:?} then {:?}", w[0], w[1]);
        assert!(w[1].sharpness >= w[0].sharpness, "φ never decreases");
    }
    assert_close(result.last().max_loss, max_loss, 1e-9, "the corner after 200 updates");
    assert_close(result.last().sharpness, phi(max_loss, base), 1e-6, "φ at the corner");
    // The box's corner along the gradient's signs is this convex loss's maximiser over the box: one projected step
    // gives what 200 SGD updates approach (and 5 are far from).
    let corner_point = result.corner.as_ref().expect("the corner is measured");
    assert_close(corner_point.loss, max_loss, 1e-12, "loss at the box's corner");
    assert_close(corner_point.sharpness, phi(max_loss, base), 1e-9, "φ at the box's corner");
    assert!(result.points[2].sharpness < 0.5 * corner_point.sharpness, "5 updates reach less than half of it");
    assert_in_box(&model, PAPER_EPSILON);
}

#[test]
fn the_reported_maximum_is_over_every_evaluation_so_far() {
    // One example per micro-batch, one micro-batch per update: the first pushes x to the corner away from the
    // whole set's mean centre (the maximum), the second to the opposite corner, where the loss is lower.
    let data = vec![
        vec![std::array::from_fn(|i| X0[i] - SIDE[i] * 0.5)],
        vec![std::array::from_fn(|i| X0[i] + SIDE[i] * 0.3)],
    ];
    let model = Quadratic::new(Kind::Double);
    let config = SharpnessConfig { lr: 1e4, accumulate: 1, ..SharpnessConfig::paper(vec![1, 2]) };
    let result = epsilon_sharpness(&model, &batches(&data, Kind::Double), &config).expect("sharpness");
    let h = half_width(PAPER_EPSILON);
    let far: [f64; 7] = std::array::from_fn(|i| X0[i] + SIDE[i] * h[i]);
    let near: [f64; 7] = std::array::from_fn(|i| X0[i] - SIDE[i] * h[i]);
    assert_eq!(corner(&data, PAPER_EPSILON), far);
    let (first, second) = (&result.points[0], &result.points[1]);
    assert_close(first.loss, loss_at(&far, &data), 1e-9, "after the first update");
    assert_close(second.loss, loss_at(&near, &data), 1e-9, "after the second update");
    assert!(second.loss < first.loss, "the second update went down: {} then {}", first.loss, second.loss);
    assert_eq!((second.max_loss, second.sharpness), (first.max_loss, first.sharpness), "the maximum is kept");
    assert_close(second.sharpness, phi(loss_at(&far, &data), loss_at(&X0, &data)), 1e-9, "φ at the far corner");
}

#[test]
fn accumulating_micro_batches_equals_one_update_on_their_concatenation() {
    // A box wide enough (ε = 1) that one update of lr 1 is not clipped, so the step itself is compared.
    let data = centres(&SIZES[..4]);
    let config = SharpnessConfig { epsilon: 1.0, lr: 1.0, accumulate: 4, evaluate_at: vec![1] };
    let split = Quadratic::new(Kind::Double);
    let split_result = epsilon_sharpness(&split, &batches(&data, Kind::Double), &config).expect("four micro-batches");
    let joined = Quadratic::new(Kind::Double);
    let one_batch = vec![data.concat()];
    let joined_config = SharpnessConfig { accumulate: 1, ..config.clone() };
    let joined_result =
        epsilon_sharpness(&joined, &batches(&one_batch, Kind::Double), &joined_config).expect("their concatenation");

    let weighted = mean_centre(&data, &[0, 1, 2, 3]);
    let unweighted: [f64; 7] = std::array::from_fn(|i| (0..4).map(|k| mean_centre(&data, &[k])[i]).sum::<f64>() / 4.0);
    let (x_split, x_joined) = (split.last_seen(), joined.last_seen());
    for i in 0..7 {
        let expected = X0[i] + A[i] * (X0[i] - weighted[i]);
        assert!((x_split[i] - x_joined[i]).abs() <= 1e-15, "x_{i}: {} vs. {}", x_split[i], x_joined[i]);
        assert!((x_split[i] - expected).abs() <= 1e-15, "x_{i}: {} vs. {expected} by hand", x_split[i]);
        let if_unweighted = X0[i] + A[i] * (X0[i] - unweighted[i]);
        assert!((expected - if_unweighted).abs() > 1e-5, "the test tells the weightings apart");
    }
    assert_close(split_result.base_loss, joined_result.base_loss, 1e-14, "ℓ(x)");
    assert_close(split_result.last().max_loss, joined_result.last().max_loss, 1e-14, "ℓ after one update");
}

#[test]
fn parameters_buffers_and_gradients_are_left_as_found() {
    let data = centres(&SIZES);
    let model = Quadratic::new(Kind::Double);
    let before = variable_bits(&model);
    let config = SharpnessConfig { lr: 1e4, ..SharpnessConfig::paper(vec![2]) };
    let batches = batches(&data, Kind::Double);
    let result = epsilon_sharpness(&model, &batches, &config).expect("sharpness");
    assert!(result.last().sharpness > 0.0, "the parameters did move");
    assert_eq!(variable_bits(&model), before, "parameters, the unused one and the buffer, bit for bit");
    assert!(!model.w.grad().defined() && !model.v.grad().defined(), "no gradient where there was none");

    // Gradients the caller has accumulated survive.
    model.loss(&model.forward(&batches[0], true, None), &batches[0]).backward();
    let grads = (bits(&model.w.grad()), bits(&model.v.grad()));
    assert!(grads.0.iter().any(|&b| b != 0), "a non-zero gradient to keep");
    let again = epsilon_sharpness(&model, &batches, &config).expect("sharpness");
    assert_eq!(again, result, "the same answer from the same parameters");
    assert_eq!((bits(&model.w.grad()), bits(&model.v.grad())), grads);
    assert_eq!(variable_bits(&model), before);
}

#[test]
fn an_error_midway_still_restores_the_parameters() {
    let data = centres(&SIZES);
    let mut model = Quadratic::new(Kind::Double);
    let before = variable_bits(&model);
    // Forward passes: 5 for ℓ(x), 5 for the whole set's gradient and 5 for the loss at the box's corner, 4 for
    // update 1, 5 for its evaluation, 4 for update 2; from the 29th, NaN.
    model.nan_from_call = Some(28);
    let config = SharpnessConfig { lr: 1e4, ..SharpnessConfig::paper(vec![1, 2]) };
    let message = error_of(epsilon_sharpness(&model, &batches(&data, Kind::Double), &config));
    assert!(message.contains("after 2 ascent updates"), "{message}");
    assert_eq!(model.seen.borrow().len(), 33, "the failing evaluation was the last thing done");
    assert_eq!(model.seen.borrow()[15], X0.to_vec(), "the ascent starts at x, after the corner");
    assert_ne!(model.seen.borrow()[23], X0.to_vec(), "the parameters had moved when it failed");
    assert_eq!(variable_bits(&model), before);
}

#[test]
fn dropout_is_off_while_measuring() {
    let data = centres(&SIZES);
    let mut model = Quadratic::new(Kind::Double);
    model.dropout = 0.5;
    let batches = batches(&data, Kind::Double);
    let config = SharpnessConfig::paper(vec![1, 3]);
    let first = epsilon_sharpness(&model, &batches, &config).expect("sharpness");
    let second = epsilon_sharpness(&model, &batches, &config).expect("sharpness");
    assert_eq!(first, second, "deterministic");
    assert_close(first.base_loss, loss_at(&X0, &data), 1e-12, "ℓ(x) without dropout");
    let train_mode = tch::no_grad(|| model.loss(&model.forward(&batches[0], true, None), &batches[0]));
    let eval_mode = tch::no_grad(|| model.loss(&model.forward(&batches[0], false, None), &batches[0]));
    assert_ne!(train_mode.double_value(&[]), eval_mode.double_value(&[]), "the dropout does act in train mode");
}

#[test]
fn float32_parameters_are_measured_in_float32_and_restored() {
    let data = centres(&SIZES);
    let model = Quadratic::new(Kind::Float);
    let before = variable_bits(&model);
    let config = SharpnessConfig { epsilon: 1e-3, lr: 1e4, ..SharpnessConfig::paper(vec![2]) };
    let result = epsilon_sharpness(&model, &batches(&data, Kind::Float), &config).expect("sharpness");
    let (base, max_loss) = (loss_at(&X0, &data), loss_at(&corner(&data, 1e-3), &data));
    assert_close(result.base_loss, base, 1e-6, "ℓ(x) in float32");
    assert_close(result.last().max_loss, max_loss, 1e-6, "the corner in float32");
    assert_close(result.last().sharpness, phi(max_loss, base), 1e-2, "φ in float32");
    assert_eq!((model.w.kind(), model.v.kind()), (Kind::Float, Kind::Float));
    assert_eq!(variable_bits(&model), before);
}

#[test]
fn sharpness_rejects_settings_and_models_it_cannot_measure() {
    let data = centres(&SIZES);
    let model = Quadratic::new(Kind::Double);
    let batches = batches(&data, Kind::Double);
    let paper = SharpnessConfig::paper(vec![10]);
    let cases = [
        (SharpnessConfig { epsilon: 0.0, ..paper.clone() }, "epsilon must be positive"),
        (SharpnessConfig { epsilon: f64::NAN, ..paper.clone() }, "epsilon must be positive"),
        (SharpnessConfig { lr: -PAPER_LR, ..paper.clone() }, "lr must be positive"),
        (SharpnessConfig { accumulate: 0, ..paper.clone() }, "accumulate must be at least 1"),
        (SharpnessConfig::paper(vec![]), "evaluate_at is empty"),
        (SharpnessConfig::paper(vec![10, 5]), "strictly increasing"),
        (SharpnessConfig::paper(vec![5, 5]), "strictly increasing"),
    ];
    for (config, expected) in cases {
        let message = error_of(epsilon_sharpness(&model, &batches, &config));
        assert!(message.contains(expected), "{message:?} should say {expected:?}");
    }
    let message = error_of(epsilon_sharpness(&model, &[], &paper));
    assert!(message.contains("no batches"), "{message}");
    let empty = [Centres(Tensor::zeros([0, 7], (Kind::Double, Device::Cpu)))];
    let message = error_of(epsilon_sharpness(&model, &empty, &paper));
    assert!(message.contains("hold no examples"), "{message}");

    let mut frozen = Quadratic::new(Kind::Double);
    frozen.vs.freeze();
    let message = error_of(epsilon_sharpness(&frozen, &batches, &paper));
    assert!(message.contains("no trainable parameters"), "{message}");

    let mut broken = Quadratic::new(Kind::Double);
    broken.nan_from_call = Some(0);
    let message = error_of(epsilon_sharpness(&broken, &batches, &paper));
    assert!(message.contains("loss at the model's own parameters is NaN"), "{message}");
    assert_eq!(broken.seen.borrow().len(), 5, "it stops before any ascent");
}
