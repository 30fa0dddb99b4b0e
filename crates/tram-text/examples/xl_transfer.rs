//! Runs the cross-lingual task (Table 5 analogue) for some methods and seeds through `tram_task::train`, printing
//! accuracies, timings, the mean table over seeds and the paper's Wilcoxon tests: how the embedded profile's
//! budget was measured.
//!
//! ```text
//! cargo run --release -p tram-text --example xl_transfer -- \
//!     --methods base,sam,tram-prev,tram-x --seeds 0,1 --epochs 2 --time-steps 3
//! ```
//!
//! Flags (defaults = the embedded profile): `--methods` (tram-core names), `--seeds`, `--epochs`, `--batch-size`,
//! `--lr`, `--warmup` (fraction of the steps), `--max-train-batches`, `--task` (TOML of the task's keys; default
//! the embedded profile's `'noise_at = "cached"'`; e.g. `'trainable = { top-layers = 2 }'` or
//! `'pooling = "first"'`), `--time-steps ROUNDS` (median step time per method first), `--probe` (first, the
//! frozen encoder's baseline: a logistic-regression probe on its pooled representation), `--csv FILE` (one row per
//! run and set), `--threads N`, `--verbose` (every step's report), `--sigma S` (input-noise σ of TRAM-x, R3F,
//! TRAM-Fisher, ASAM+R3F; default tram-core's 0.1), `--selection last|best-validation` (default best-validation).

use std::collections::BTreeMap;
use std::time::Instant;

use tram_core::{BaseConfig, Decay, LrSchedule, MethodConfig, MethodName, OptimizerConfig};
use tram_task::{Domain, RunContext, RunSettings, Selection, Split, Task};
use tram_text::xlingual::CrossLingualConfig;

struct Args {
    methods: Vec<MethodName>,
    seeds: Vec<u64>,
    epochs: usize,
    batch_size: usize,
    lr: f64,
    warmup: f64,
    max_train_batches: Option<usize>,
    task: String,
    time_steps: usize,
    probe: bool,
    verbose: bool,
    sigma: Option<f64>,
    selection: Selection,
    csv: Option<String>,
    threads: Option<i32>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        methods: vec![MethodName::Base, MethodName::TramPrev],
        seeds: vec![0],
        epochs: 2,
        batch_size: 16,
        lr: 1e-4,
        warmup: 0.1,
        max_train_batches: None,
        task: "noise_at = \"cached\"".into(),
        time_steps: 0,
        probe: false,
        verbose: false,
        sigma: None,
        selection: Selection::BestValidation,
        csv: None,
        threads: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |s: String| s.parse::<f64>().map_err(|e| format!("{s}: {e}"));
        match flag.as_str() {
            "--methods" => {
                a.methods = value()?
                    .split(',')
                    .map(|m| MethodName::parse(m).map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--seeds" => {
                a.seeds =
                    value()?.split(',').map(|s| s.parse().map_err(|e| format!("{s}: {e}"))).collect::<Result<_, _>>()?
            }
            "--epochs" => a.epochs = num(value()?)? as usize,
            "--batch-size" => a.batch_size = num(value()?)? as usize,
            "--lr" => a.lr = num(value()?)?,
            "--warmup" => a.warmup = num(value()?)?,
            "--max-train-batches" => a.max_train_batches = Some(num(value()?)? as usize),
            "--task" => a.task = value()?,
            "--time-steps" => a.time_steps = num(value()?)? as usize,
            "--csv" => a.csv = Some(value()?),
            "--probe" => a.probe = true,
            "--verbose" => a.verbose = true,
            "--sigma" => a.sigma = Some(num(value()?)?),
            "--selection" => {
                a.selection = match value()?.as_str() {
                    "last" => Selection::Last,
                    "best-validation" => Selection::BestValidation,
                    other => return Err(format!("--selection {other}: expected last or best-validation")),
                }
            }
            "--threads" => a.threads = Some(num(value()?)? as i32),
            other => return Err(format!("unknown flag {other} (see the example's documentation)")),
        }
    }
    Ok(a)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    let config: CrossLingualConfig = toml::from_str(&args.task)?;
    let t = Instant::now();
    let task = config.build()?;
    println!("build {:.1} s: {}", t.elapsed().as_secs_f64(), task.describe());
    let (t, cpu0) = (Instant::now(), cpu_seconds());
    task.prepare(tch::Device::Cpu)?;
    println!(
        "frozen prefix + cache + eval batches: {:.1} s ({:.1} CPU s)",
        t.elapsed().as_secs_f64(),
        cpu_seconds() - cpu0
    );

    let settings = |method: MethodName, seed: u64| -> RunSettings {
        let steps = task.steps_per_epoch(&RunSettings::new(opt(method, 0, &args), args.epochs, args.batch_size));
        let total = steps.map(|s| s * args.epochs).unwrap_or(1) as u64;
        let mut o = opt(method, total, &args);
        o.seed = seed;
        let mut r = RunSettings::new(o, args.epochs, args.batch_size);
        r.device = tram_task::DeviceChoice::Cpu;
        r.max_train_batches = args.max_train_batches;
        r.selection = args.selection;
        r
    };
    if args.probe {
        probe(&task)?;
    }
    if args.time_steps > 0 {
        let run = settings(MethodName::Base, 0);
        let configs: Vec<OptimizerConfig> = args.methods.iter().map(|&m| settings(m, 0).optimizer).collect();
        for t in task.time_steps(&run, &configs, args.time_steps)? {
            println!(
                "step time {:>16}: {:7.1} ms  ({} fwd / {} bwd, optimizer share {:.2})",
                t.method.name.as_str(),
                t.median_ms,
                t.forward_passes,
                t.backward_passes,
                t.optimizer_share
            );
        }
    }

    // (method, seed) → set name → accuracy of the selected epoch's test sets; plus English validation.
    let mut table: BTreeMap<(MethodName, u64), BTreeMap<String, f64>> = BTreeMap::new();
    let mut csv = String::from("method,seed,epoch,set,split,domain,accuracy,loss,examples\n");
    let total = Instant::now();
    for &method in &args.methods {
        for &seed in &args.seeds {
            let run = settings(method, seed);
            let (t, cpu0) = (Instant::now(), cpu_seconds());
            let verbose = args.verbose;
            let mut on_step = |r: &tram_core::StepReport| {
                if verbose {
                    println!(
                        "  step {:3} lr {:.2e} loss {:.4} d {:?} radius {:?} |eps| {:?} |g| {:.3e}",
                        r.step, r.lr, r.loss, r.divergence, r.radius, r.eps_norm, r.grad_norm
                    );
                }
            };
            let mut ctx = RunContext::new(&mut on_step);
            let result = task.run(&run, &mut ctx)?;
            let secs = t.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu0;
            let sel = result.selected_epoch().expect("an evaluated epoch");
            let mut row = BTreeMap::new();
            for e in &sel.evals {
                let key = if e.split == Split::Validation { format!("{}-val", e.set) } else { e.set.clone() };
                row.insert(key, e.value);
            }
            for ep in &result.epochs {
                for e in &ep.evals {
                    csv.push_str(&format!(
                        "{},{seed},{},{},{},{},{:.6},{:.6},{}\n",
                        method.as_str(),
                        ep.epoch,
                        e.set,
                        e.split.as_str(),
                        e.domain.as_str(),
                        e.value,
                        e.loss,
                        e.examples
                    ));
                }
            }
            let zs: Vec<f64> = sel
                .evals
                .iter()
                .filter(|e| e.domain == Domain::ZeroShot && e.split == Split::Test)
                .map(|e| e.value)
                .collect();
            let zs_mean = zs.iter().sum::<f64>() / zs.len().max(1) as f64;
            row.insert("ZS".into(), zs_mean);
            let train_s: f64 = result.epochs.iter().map(|e| e.train_seconds).sum();
            let eval_s: f64 = result.epochs.iter().map(|e| e.eval_seconds).sum();
            println!(
                "{:>16} seed {seed}: epoch {} selected; en val {:.3} test {:.3}, zero-shot mean {:.3} ({} sets); \
                 train loss {:.3}; {:.0} s ({:.0} train, {:.0} eval, {} steps; {:.0} CPU s)",
                method.as_str(),
                sel.epoch,
                row.get("en-val").copied().unwrap_or(f64::NAN),
                row.get("en").copied().unwrap_or(f64::NAN),
                zs_mean,
                zs.len(),
                sel.train_loss,
                secs,
                train_s,
                eval_s,
                result.steps.len(),
                cpu
            );
            table.insert((method, seed), row);
        }
    }
    println!("all runs: {:.1} min ({:.1} CPU min)", total.elapsed().as_secs_f64() / 60.0, cpu_seconds() / 60.0);
    if let Some(path) = &args.csv {
        std::fs::write(path, csv)?;
    }

    // Mean over seeds per method, then the paper's tests on the zero-shot mean, paired by seed.
    let sets: Vec<String> = table.values().next().map(|r| r.keys().cloned().collect()).unwrap_or_default();
    println!("\nmean over {} seeds (accuracy %):", args.seeds.len());
    println!("{:>16} {}", "method", sets.iter().map(|s| format!("{s:>7}")).collect::<String>());
    for &m in &args.methods {
        let cells: String = sets
            .iter()
            .map(|s| {
                let v: Vec<f64> = args.seeds.iter().filter_map(|&seed| table[&(m, seed)].get(s).copied()).collect();
                format!("{:7.2}", 100.0 * tram_stats::mean(&v))
            })
            .collect();
        println!("{:>16} {cells}", m.as_str());
    }
    let zs = |m: MethodName| -> Vec<f64> { args.seeds.iter().map(|&s| table[&(m, s)]["ZS"]).collect() };
    let tram = [MethodName::TramX, MethodName::TramPrev, MethodName::TramPretrained, MethodName::TramFisher];
    if args.seeds.len() >= 2 {
        println!("\nWilcoxon signed-rank, one-sided (row > column), zero-shot mean paired by seed:");
        for &t in tram.iter().filter(|t| args.methods.contains(t)) {
            for &o in args.methods.iter().filter(|m| !tram.contains(m)) {
                match tram_stats::wilcoxon(&zs(t), &zs(o), tram_stats::Alternative::Greater) {
                    Ok(w) => println!("  {:>16} > {:<10} p = {:.4}", t.as_str(), o.as_str(), w.pvalue),
                    Err(e) => println!("  {:>16} > {:<10} {e}", t.as_str(), o.as_str()),
                }
            }
        }
    }
    Ok(())
}

fn opt(method: MethodName, total_steps: u64, args: &Args) -> OptimizerConfig {
    let warmup = (args.warmup * total_steps as f64).round() as u64;
    let schedule = LrSchedule {
        base_lr: args.lr,
        decay: Decay::Polynomial { power: 1.0 },
        warmup_steps: warmup,
        total_steps: Some(total_steps.max(warmup + 1)),
        end_lr: 0.0,
    };
    let mut m = MethodConfig::new(method);
    if matches!(method, MethodName::TramX | MethodName::R3f | MethodName::TramFisher | MethodName::AsamR3f) {
        m.sigma = args.sigma;
    }
    OptimizerConfig::new(m, BaseConfig::adam(), schedule)
}

/// The frozen-encoder baseline: a logistic regression (Adam, full batch, 300 iterations) on the pre-trained
/// model's pooled representation of the English training set, evaluated on every set.
fn probe(task: &tram_text::xlingual::CrossLingualTask) -> Result<(), Box<dyn std::error::Error>> {
    use tch::nn::{Module, OptimizerConfig as _};
    use tram_text::xlingual::EvalSet;
    let t = Instant::now();
    let model = task.model(0, tch::Device::Cpu)?;
    let train = EvalSet {
        name: "train".into(),
        domain: Domain::InDomain,
        split: Split::Test,
        examples: task.train_examples().to_vec(),
    };
    let features = |set: &EvalSet| {
        let labels: Vec<i64> = set.examples.iter().map(|e| e.label).collect();
        (task.representations(&model, set), tch::Tensor::from_slice(&labels))
    };
    let (x, y) = features(&train);
    let (mean, std) = (x.mean_dim(0, true, tch::Kind::Float), x.std_dim(0, true, true) + 1e-6);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let linear = tch::nn::linear(vs.root(), x.size()[1], task.classes().len() as i64, Default::default());
    let mut opt = tch::nn::Adam::default().build(&vs, 1e-2)?;
    let xs = (&x - &mean) / &std;
    for _ in 0..300 {
        let loss = linear.forward(&xs).cross_entropy_for_logits(&y) + 1e-3 * linear.ws.square().sum(tch::Kind::Float);
        opt.backward_step(&loss);
    }
    let acc = |x: &tch::Tensor, y: &tch::Tensor| {
        tch::no_grad(|| linear.forward(&((x - &mean) / &std)).accuracy_for_logits(y).double_value(&[]))
    };
    let mut line = format!("frozen-encoder probe: train {:.3}", acc(&x, &y));
    let mut zs = vec![];
    for set in task.eval_sets() {
        let (x, y) = features(set);
        let a = acc(&x, &y);
        line.push_str(&format!(", {}{} {a:.3}", set.name, if set.split == Split::Validation { "-val" } else { "" }));
        if set.domain == Domain::ZeroShot {
            zs.push(a);
        }
    }
    println!("{line}; zero-shot mean {:.3} ({:.0} s)", tram_stats::mean(&zs), t.elapsed().as_secs_f64());
    Ok(())
}

/// CPU seconds of this process so far (user + system, Linux `/proc/self/stat`, 100 ticks per second), which other
/// jobs on a shared machine do not inflate as they inflate wall-clock time; NaN elsewhere.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return f64::NAN };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return f64::NAN };
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime) are the 12th and 13th after the command name.
    match (f.get(11).and_then(|v| v.parse::<f64>().ok()), f.get(12).and_then(|v| v.parse::<f64>().ok())) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}
