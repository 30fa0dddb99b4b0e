//! `tram plan`'s output: one table per profile (or CSV rows), and whether each method fits the memory given.

use anyhow::{Context, Result};
use tram_core::Precision;
use tram_task::DeviceChoice;

use crate::cli::PlanArgs;
use crate::experiment::{Experiment, Profile, TableKind, TaskSpec};
use crate::plan::{self, MethodPlan, PlanTarget, ProfilePlan, GIB};

fn gib(bytes: f64) -> String {
    format!("{:.2}", bytes / GIB)
}

fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn or_unknown(v: Option<String>) -> String {
    v.unwrap_or_else(|| "unknown".into())
}

/// Where the plan's runs execute and at what rate: `--device`, `--precision` (default: the profile's),
/// `--throughput` (default: measured here, on that device, when it is here), `--memory` (default: the device's).
pub fn target(args: &PlanArgs, profile_precision: Precision) -> Result<(PlanTarget, Vec<String>)> {
    let mut notes = vec![];
    let precision = args.precision.unwrap_or(profile_precision);
    let cuda = match DeviceChoice::parse(&args.device)? {
        DeviceChoice::Cpu => false,
        DeviceChoice::Cuda(_) => true,
        DeviceChoice::Auto => tch::Cuda::is_available(),
    };
    let here = if cuda {
        DeviceChoice::parse(&args.device)?.resolve().ok().filter(|d| d.is_cuda())
    } else {
        Some(tch::Device::Cpu)
    };
    let throughput = match (args.throughput, here) {
        (Some(t), _) => {
            notes.push(format!("throughput {t:.3e} FLOP/s (stated)"));
            Some(t)
        }
        (None, Some(device)) => {
            let t = plan::measure_throughput(device, precision)?;
            notes.push(format!(
                "throughput {t:.3e} FLOP/s (a {precision:?} matmul measured here on {device:?}: a step runs slower)"
            ));
            Some(t)
        }
        (None, None) => {
            notes.push("no CUDA device here: times unknown (give --throughput FLOPS)".into());
            None
        }
    };
    let memory = match (&args.memory, cuda) {
        (Some(m), _) => {
            let m = plan::parse_memory(m)?;
            notes.push(format!("memory {} GiB (--memory)", gib(m)));
            Some(m)
        }
        (None, false) => plan::cpu_memory().inspect(|m| notes.push(format!("memory {} GiB (this machine's)", gib(*m)))),
        (None, true) => {
            notes.push("memory: give --memory (e.g. 80GiB) to see what fits".into());
            None
        }
    };
    Ok((PlanTarget { cuda, precision, throughput, memory }, notes))
}

/// `tram plan`: each profile named (or every profile of the experiment) planned.
pub fn run(args: &PlanArgs) -> Result<()> {
    let exp = Experiment::load(&args.experiment)?;
    if exp.file.table == TableKind::Analysis {
        anyhow::bail!(
            "{}: an analysis experiment trains nothing; plan its source experiment",
            args.experiment.display()
        );
    }
    let names: Vec<String> = match &args.profile {
        Some(p) => vec![p.clone()],
        None => exp.profile_names().iter().map(|s| s.to_string()).collect(),
    };
    let mut csv_header = true;
    for name in names {
        let profile: Profile<TaskSpec> = exp.profile(&name, &args.overrides)?;
        let (target, notes) = target(args, profile.precision)?;
        let plan = ProfilePlan::new(&profile, &target).with_context(|| format!("planning profile {name}"))?;
        if args.csv {
            print!("{}", csv_rows(&exp.file.name, &name, &plan, &target, csv_header));
            csv_header = false;
        } else {
            print_table(&exp.file.name, &name, &plan, &target, &notes);
        }
    }
    Ok(())
}

fn print_table(exp: &str, name: &str, plan: &ProfilePlan, target: &PlanTarget, notes: &[String]) {
    let s = &plan.shape;
    println!("{exp} {name}: {}", s.description);
    println!("  parameters: {} total, {} trained", count(s.total_params), count(s.trained_params));
    if let Some(c) = &s.caveat {
        println!("  counts assume {c}");
    }
    let device = if target.cuda { "cuda" } else { "cpu" };
    println!("  {device}, {:?}; {}", target.precision, notes.join("; "));
    let steps = plan.steps_per_run.map_or("unknown (depends on the data's size)".into(), |n| {
        format!("{} (max_train_batches × epochs)", count(n))
    });
    println!(
        "  micro-batch {} × accumulate {}; steps per run {steps}; {} runs",
        plan.batch_size,
        plan.accumulate,
        plan.methods.len() * plan.seeds
    );
    println!(
        "  {:<24} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>8}",
        "method",
        "passes",
        "weights",
        "grads",
        "optim",
        "copies",
        "activ",
        "temps",
        "total",
        "fits",
        "TFLOP/step",
        "s/step",
        "h/run"
    );
    println!(
        "  {:<24} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "", "F/B", "GiB", "GiB", "GiB", "GiB", "GiB", "GiB", "GiB"
    );
    for p in &plan.methods {
        let fits = match (p.total(), target.memory) {
            (Some(t), Some(m)) => if t <= m { "yes" } else { "NO" }.to_string(),
            _ => "?".into(),
        };
        println!(
            "  {:<24} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>8}",
            p.method,
            format!("{}/{}", p.passes.0, p.passes.1),
            gib(p.weights),
            gib(p.gradients),
            gib(p.optimizer),
            gib(p.copies),
            or_unknown(p.activations.map(gib)),
            or_unknown(p.activations.map(|a| gib(p.transient(a)))),
            or_unknown(p.total().map(gib)),
            fits,
            or_unknown(p.flops_per_step.map(|f| format!("{:.2}", f / 1e12))),
            or_unknown(p.seconds_per_step.map(|s| format!("{s:.3}"))),
            or_unknown(plan.seconds_per_run(p).map(|s| format!("{:.1}", s / 3600.0))),
        );
    }
    if !target.cuda {
        println!(
            "  total: the tensors (weights to temps), {:.0} % of them for the C heap beside them, {} GiB for the runtime",
            plan::CPU_HEAP_ALLOWANCE * 100.0,
            gib(plan::CPU_RUNTIME_BYTES)
        );
    }
    if let Some(m) = target.memory {
        for p in &plan.methods {
            fit_note(p, plan, m, target);
        }
    }
    match plan.seconds_per_table() {
        Some(s) => println!(
            "  the table: {:.1} h of training steps in all ({} runs; evaluation not counted)",
            s / 3600.0,
            plan.methods.len() * plan.seeds
        ),
        None => println!("  the table: time unknown"),
    }
    println!();
}

/// What a method that does not fit would need: by how much it is over, and a micro-batch that fits.
fn fit_note(p: &MethodPlan, plan: &ProfilePlan, memory: f64, target: &PlanTarget) {
    let Some(total) = p.total() else { return };
    if total <= memory {
        return;
    }
    let over = total - memory;
    let per_example = p.activations.expect("a total has activations") / plan.batch_size as f64;
    // The largest micro-batch that fits and divides the profile's batch, so that accumulation keeps it.
    let batch = plan.batch_size * plan.accumulate;
    let micro = plan::largest_micro_batch(p, per_example, memory)
        .and_then(|b| (1..=b.min(batch)).rev().find(|d| batch.is_multiple_of(*d)));
    match micro {
        Some(b) => println!(
            "  {} does not fit {} GiB: it needs {} GiB more; batch_size = {b} with accumulate = {} fits",
            p.method,
            gib(memory),
            gib(over),
            batch / b
        ),
        _ => println!(
            "  {} does not fit {} GiB: it needs {} GiB more, and even one example at a time does not fit ({} GiB for \
             the parameters, gradients, optimizer state and copies{})",
            p.method,
            gib(memory),
            gib(over),
            gib(p.resident(p.fixed())),
            if target.cuda { "" } else { ", the heap beside them and the runtime" }
        ),
    }
}

/// `tram plan --csv`'s rows for one profile (with the header line first when `header`). `total_bytes` is
/// `tensor_bytes × (1 + heap allowance) + runtime_bytes` on the CPU and `tensor_bytes` on CUDA; `tensor_bytes` is
/// the sum of the six parts before it (weights to transient), the peak a run's `peak_tensor_bytes` measures. The
/// columns after `seconds_per_run` came later and are appended, so that scripts reading by position keep working.
pub fn csv_rows(exp: &str, name: &str, plan: &ProfilePlan, target: &PlanTarget, header: bool) -> String {
    let mut out = String::new();
    if header {
        out.push_str(
            "experiment,profile,method,device,precision,total_params,trained_params,micro_batch,accumulate,\
             forward_passes,backward_passes,weights_bytes,gradient_bytes,optimizer_bytes,copies_bytes,\
             activation_bytes,transient_bytes,total_bytes,memory_bytes,fits,flops_per_step,seconds_per_step,\
             steps_per_run,seconds_per_run,tensor_bytes,runtime_bytes\n",
        );
    }
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.0}"));
    for p in &plan.methods {
        let fits = p.total().zip(target.memory).map_or(String::new(), |(t, m)| (t <= m).to_string());
        out.push_str(&format!(
            "{exp},{name},{},{},{:?},{},{},{},{},{},{},{:.0},{:.0},{:.0},{:.0},{},{},{},{},{fits},{},{},{},{},{},{:.0}\n",
            p.method,
            if target.cuda { "cuda" } else { "cpu" },
            target.precision,
            plan.shape.total_params,
            plan.shape.trained_params,
            plan.batch_size,
            plan.accumulate,
            p.passes.0,
            p.passes.1,
            p.weights,
            p.gradients,
            p.optimizer,
            p.copies,
            opt(p.activations),
            opt(p.activations.map(|a| p.transient(a))),
            opt(p.total()),
            opt(target.memory),
            opt(p.flops_per_step),
            p.seconds_per_step.map_or(String::new(), |s| format!("{s:.4}")),
            plan.steps_per_run.map_or(String::new(), |n| n.to_string()),
            plan.seconds_per_run(p).map_or(String::new(), |s| format!("{s:.0}")),
            opt(p.tensors()),
            p.runtime,
        ));
    }
    out
}
