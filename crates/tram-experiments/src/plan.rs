//! `tram plan`: what each method of a profile costs before anything runs: parameters (total and trained),
//! memory (weights, gradients, the base optimizer's state, the method's copies of θ, activations at the profile's
//! micro-batch), passes and FLOPs per step, and time per step, run and table at a measured or stated throughput.
//! The model comes from the task's configuration alone ([`tram_task::ModelShape`]), so the `paper` profiles plan
//! on a machine without their downloads.

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};
use tram_core::{Precision, Role, StepDriver, Target};
use tram_task::shape::ExampleCosts;
use tram_task::ModelShape;

use crate::experiment::{method_id, Profile, TaskConfig};

/// Where the planned runs execute, in what arithmetic, at what rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanTarget {
    pub cuda: bool,
    pub precision: Precision,
    /// Dense matmul FLOP/s, measured or stated; `None`: unknown (no time is predicted).
    pub throughput: Option<f64>,
    /// Memory the runs may use, in bytes; `None`: unknown (nothing is said about fitting).
    pub memory: Option<f64>,
}

/// The process itself on the CPU (libtorch's code and allocator, the task's tokenizer and data): what a run's
/// resident memory holds besides its tensors (an estimate; `just rehearse` compares the plan with the measured).
pub const CPU_RUNTIME_BYTES: f64 = 0.6 * GIB;

/// The C heap beside the live tensors on the CPU, as a fraction of the tensors' peak: tram keeps freed memory
/// mapped (`tram_native::keep_freed_memory`, for speed), so the blocks a step frees stay resident and holes between
/// blocks of different lives are not always reused; libtorch's and the loaders' own allocations come on top. An
/// allowance, not a model: the largest excess the CPU rehearsals measured (`results/rehearsal-cpu.csv`, resident
/// memory less the peak tensors and [`CPU_RUNTIME_BYTES`], over the peak tensors: 0.11–0.30), so that the plan's
/// CPU totals err high rather than low (docs/paper-scale.md).
pub const CPU_HEAP_ALLOWANCE: f64 = 0.30;

pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// One method's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodPlan {
    pub method: String,
    pub passes: (u32, u32),
    pub weights: f64,
    pub gradients: f64,
    pub optimizer: f64,
    /// Saved θ for the restore and the trust-region target's copy (θ_{t−1}, θ_0, the EMA).
    pub copies: f64,
    /// Activations and outputs of one micro-batch (`None`: the task does not model its architecture's).
    pub activations: Option<f64>,
    /// A copy of the largest trained tensor, the step's temporary beside the graph ([`MethodPlan::transient`]).
    pub largest_tensor: f64,
    /// What the ascent holds once the graph is freed ([`ascent_memory`]).
    pub ascent: f64,
    /// What a process holds besides tensors (the CPU's runtime; CUDA's context is outside its allocator).
    pub runtime: f64,
    /// The heap beside the tensors, as a fraction of them ([`CPU_HEAP_ALLOWANCE`] on the CPU; 0 on CUDA, whose
    /// caching allocator's peak is what the plan's tensors predict).
    pub heap: f64,
    pub flops_per_step: Option<f64>,
    pub seconds_per_step: Option<f64>,
}

impl MethodPlan {
    /// Bytes in all, where every part is known: the tensors at their peak, the heap beside them and the runtime.
    pub fn total(&self) -> Option<f64> {
        self.tensors().map(|t| self.resident(t))
    }

    /// The tensors' bytes at the step's peak, where every part is known: what CUDA's `max_memory_allocated` and
    /// tram's count of CPU tensor bytes measure.
    pub fn tensors(&self) -> Option<f64> {
        self.activations.map(|a| self.fixed() + a + self.transient(a))
    }

    /// The process's bytes when its tensors hold `tensors`: with the heap beside them and the runtime.
    pub fn resident(&self, tensors: f64) -> f64 {
        tensors * (1.0 + self.heap) + self.runtime
    }

    /// Tensor bytes that do not depend on the micro-batch: weights, gradients, optimizer state, copies.
    pub fn fixed(&self) -> f64 {
        self.weights + self.gradients + self.optimizer + self.copies
    }

    /// The step's temporaries outside the autograd graph at its peak, beyond `activations`: beside the graph a copy
    /// of the largest trained tensor (from the second backward on, a fresh gradient before it is added to the kept
    /// one; the optimizer's update, tensor by tensor); or, where it exceeds the graph, what the ascent holds once
    /// the graph is freed. Measured by the CPU rehearsal (docs/paper-scale.md): with XLM-R's 768 MB embedding table
    /// these are the peak.
    pub fn transient(&self, activations: f64) -> f64 {
        self.largest_tensor.max(self.ascent - activations)
    }

    /// Bytes the step driver reports as `extra_memory_bytes`: the copies and the optimizer's state.
    pub fn extra(&self) -> f64 {
        self.copies + self.optimizer
    }
}

/// Bytes of one element of the passes' activations: the reduced type under autocast, else float32.
fn activation_bytes(precision: Precision) -> f64 {
    if precision.reduced().is_some() {
        2.0
    } else {
        4.0
    }
}

/// Copies of one example's output a pass holds at its peak, in float32, as the CPU rehearsal of GPT-2 at the
/// paper's shapes measured them (`results/rehearsal-cpu.csv`, docs/paper-scale.md; a 1,024-token block's logits are
/// 206 MB there, and each method's peak beyond the rest of the plan, in those units, is given below):
/// - every method 6 (Adam, SAM and TRAM-θ_{t−1} measured 5.87: the logits, the loss's log-softmax and their two
///   gradients, which the plan counted before, and 1.87 more);
/// - a regulariser against a parameter target (TRPO, MESA) 7 more (measured 12.86 in all);
/// - R3F's symmetric divergence against its noised forward, with a gradient through both, 10 more (measured 16.06).
///
/// The measurement gives the counts, not which tensors they are (the loss's shifted copy of the logits, the rows
/// the divergence keeps of both outputs and its terms are candidates).
/// For a classifier the output is a few classes per example, and these copies are negligible.
fn output_copies(method: &tram_core::Method) -> f64 {
    6.0 + match regulariser(method) {
        Some(Regulariser::NoisedInput) => 10.0,
        Some(Regulariser::ParameterTarget) => 7.0,
        None => 0.0,
    }
}

/// What a trust-region regulariser compares the model's output with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Regulariser {
    /// A parameter target's output (TRPO's θ_{t−1}, MESA's EMA), computed without gradient.
    ParameterTarget,
    /// The model's own output on noised inputs (R3F), with gradient.
    NoisedInput,
}

fn regulariser(method: &tram_core::Method) -> Option<Regulariser> {
    let tr = method.trust_region.filter(|tr| matches!(tr.role, Role::Regulariser { .. }))?;
    Some(if matches!(tr.target, Target::InputNoise(_)) {
        Regulariser::NoisedInput
    } else {
        Regulariser::ParameterTarget
    })
}

/// Micro-batches whose pass-1 logits TRAM keeps for the radius while pass 2 runs: every one of the step's group
/// (one group of all `accumulate` micro-batches, or one each with m-sharpness); none for other methods.
fn kept_logits(method: &tram_core::Method, accumulate: usize, m_sharpness: bool) -> f64 {
    match method.trust_region.map(|tr| tr.role) {
        Some(Role::Radius) if m_sharpness => 1.0,
        Some(Role::Radius) => accumulate as f64,
        _ => 0.0,
    }
}

/// Forwards with gradient whose graphs live at once: a regulariser on noised inputs (R3F) backpropagates
/// through both the clean and the noised forward.
fn graphs(method: &tram_core::Method) -> f64 {
    if regulariser(method) == Some(Regulariser::NoisedInput) {
        2.0
    } else {
        1.0
    }
}

/// Activation bytes of a micro-batch of `batch` examples; `kept_logits`: micro-batches of pass-1 logits held beside it.
pub fn activation_memory(
    costs: &ExampleCosts,
    method: &tram_core::Method,
    batch: usize,
    kept_logits: f64,
    target: &PlanTarget,
) -> f64 {
    let kept = costs.attention.kept_matrices(target.cuda);
    let element = activation_bytes(target.precision);
    let mask = if target.cuda { 1.0 } else { element };
    let graph = (costs.activation_elements + kept * costs.attention_elements) * element + costs.mask_elements * mask;
    batch as f64 * (graphs(method) * graph + (output_copies(method) + kept_logits) * costs.output_elements * 4.0)
}

/// What the ascent holds while θ moves: ASAM's, TRAM's and Fisher's direction (a copy of the `trained` bytes) and
/// two tensors of `largest` bytes being formed; SAM's direction is the gradient itself, its move one tensor.
pub fn ascent_memory(method: &tram_core::Method, trained: f64, largest: f64) -> f64 {
    match method.ascent {
        None => 0.0,
        Some(tram_core::Ascent::Sam { .. }) => largest,
        Some(_) => trained + 2.0 * largest,
    }
}

/// The plan of one method of a profile.
pub fn method_plan<T>(
    profile: &Profile<T>,
    method: &tram_core::MethodConfig,
    shape: &ModelShape,
    target: &PlanTarget,
) -> Result<MethodPlan> {
    let built = method.build().with_context(|| format!("method {}", method_id(method)))?;
    let trained = shape.trained_params as f64 * 4.0;
    let optimizer = profile.optimizer.slots().len() as f64 * trained;
    let copies = StepDriver::parameter_copies(&built, &profile.optimizer) as f64 * trained - optimizer;
    // Autocast keeps a reduced copy of every weight a pass reads, for the pass.
    let cast = if target.precision.reduced().is_some() { shape.total_params as f64 * 2.0 } else { 0.0 };
    let passes = built.passes();
    let kept = kept_logits(&built, profile.accumulate, profile.m_sharpness);
    let activations = shape.costs.map(|c| activation_memory(&c, &built, profile.batch_size, kept, target));
    let largest_tensor = shape.largest_trained as f64 * 4.0;
    let flops_per_step = shape.costs.map(|c| {
        let examples = (profile.batch_size * profile.accumulate) as f64;
        examples * (f64::from(passes.0) * c.forward_flops + f64::from(passes.1) * c.backward_flops)
    });
    Ok(MethodPlan {
        method: method_id(method),
        passes,
        weights: shape.total_params as f64 * 4.0 + cast,
        gradients: trained,
        optimizer,
        copies,
        activations,
        largest_tensor,
        ascent: ascent_memory(&built, trained, largest_tensor),
        runtime: if target.cuda { 0.0 } else { CPU_RUNTIME_BYTES },
        heap: if target.cuda { 0.0 } else { CPU_HEAP_ALLOWANCE },
        flops_per_step,
        seconds_per_step: flops_per_step.zip(target.throughput).map(|(f, t)| f / t),
    })
}

/// Optimizer steps of one run where the profile fixes them (`max_train_batches × epochs`, in steps of
/// `accumulate` micro-batches); `None` where they depend on the data's size.
pub fn steps_per_run<T>(profile: &Profile<T>) -> Option<u64> {
    profile.max_train_batches.map(|m| (m / profile.accumulate * profile.epochs) as u64)
}

/// The largest micro-batch whose step fits `budget` bytes with `plan`'s fixed parts (at least one example must).
pub fn largest_micro_batch(plan: &MethodPlan, per_example: f64, budget: f64) -> Option<usize> {
    let fixed = plan.fixed();
    let fits = |b: f64| plan.resident(fixed + b * per_example + plan.transient(b * per_example)) <= budget;
    if !fits(1.0) {
        return None;
    }
    // Beyond the ascent's share the tensors grow by per_example with each example.
    let tensor_budget = (budget - plan.runtime) / (1.0 + plan.heap);
    let b = ((tensor_budget - fixed - plan.largest_tensor) / per_example).floor().max(1.0);
    Some((1..=b as usize).rev().find(|&b| fits(b as f64)).unwrap_or(1))
}

/// FLOP/s of a square matmul in `precision` on `device`: the rate a step's matmuls could reach at best.
pub fn measure_throughput(device: Device, precision: Precision) -> Result<f64> {
    let kind = match precision {
        Precision::Fp32 | Precision::Tf32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
        Precision::Fp16 => Kind::Half,
    };
    if precision == Precision::Tf32 {
        if !device.is_cuda() {
            bail!("tf32 is a CUDA matmul mode; plan the CPU in fp32 or bf16");
        }
        tram_native::set_tf32(true);
    }
    let n = if device.is_cuda() { 8192 } else { 1024 };
    let a = Tensor::randn([n, n], (kind, device));
    let b = Tensor::randn([n, n], (kind, device));
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let _ = a.matmul(&b);
    sync();
    let (start, mut reps) = (std::time::Instant::now(), 0u32);
    while reps < 3 || start.elapsed().as_secs_f64() < 1.0 {
        let _ = a.matmul(&b);
        reps += 1;
        sync();
    }
    let seconds = start.elapsed().as_secs_f64();
    if precision == Precision::Tf32 {
        tram_native::set_tf32(false);
    }
    Ok(2.0 * (n as f64).powi(3) * f64::from(reps) / seconds)
}

/// `24GiB`, `80G`, `512MiB`, or bytes.
pub fn parse_memory(text: &str) -> Result<f64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().with_context(|| format!("memory `{text}`: expected e.g. 24GiB"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" | "kb" => 1024.0,
        "m" | "mib" | "mb" => 1024.0 * 1024.0,
        "g" | "gib" | "gb" => GIB,
        "t" | "tib" | "tb" => GIB * 1024.0,
        u => bail!("memory `{text}`: unknown unit `{u}` (B, KiB, MiB, GiB, TiB)"),
    };
    Ok(value * scale)
}

/// The machine's memory: `MemTotal` of /proc/meminfo.
pub fn cpu_memory() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// A profile's whole plan: the model, each method's plan, the runs.
pub struct ProfilePlan {
    pub shape: ModelShape,
    pub methods: Vec<MethodPlan>,
    pub steps_per_run: Option<u64>,
    pub seeds: usize,
    pub batch_size: usize,
    pub accumulate: usize,
}

impl ProfilePlan {
    pub fn new<T: TaskConfig>(profile: &Profile<T>, target: &PlanTarget) -> Result<Self> {
        let shape = profile.task.shape().context("describing the task's model")?;
        let methods =
            profile.methods.iter().map(|m| method_plan(profile, m, &shape, target)).collect::<Result<Vec<_>>>()?;
        Ok(Self {
            shape,
            methods,
            steps_per_run: steps_per_run(profile),
            seeds: profile.seeds.len(),
            batch_size: profile.batch_size,
            accumulate: profile.accumulate,
        })
    }

    /// Seconds of one run of `plan` (training steps only: evaluation is not counted).
    pub fn seconds_per_run(&self, plan: &MethodPlan) -> Option<f64> {
        plan.seconds_per_step.zip(self.steps_per_run).map(|(s, n)| s * n as f64)
    }

    /// Seconds of every run of the profile (each method × each seed), where each is known.
    pub fn seconds_per_table(&self) -> Option<f64> {
        self.methods.iter().map(|p| self.seconds_per_run(p)).sum::<Option<f64>>().map(|s| s * self.seeds as f64)
    }
}
