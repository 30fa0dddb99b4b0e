//! How the embedded causal-LM profile was measured: builds the task (SmolLM2-135M on the Brown corpus by default),
//! evaluates the pre-trained model, times every method's step interleaved, then fine-tunes a few methods with
//! `tram_task::train` and prints perplexities and timings.
//!
//!     cargo run --release -p tram-text --example lm_transfer -- [key=value ...]
//!
//! Keys (defaults in brackets): methods=base,tram-prev (each `name` or `name@lr`)  steps=[40] (optimizer steps per run)  epochs=[2]
//! batch=[4]  lr=[3e-4]  warmup=[0]  rounds=[3] (timing rounds; 0: no timing)  timing=<methods> [all 11]
//! trainable=[top-2] (all | top-K)  block=[128]  eval_blocks=[16]  domain=[learned]  zero_shot=<genres> [the
//! other 14]  noise_at=[embeddings]
//! seed=[0]  threads=[libtorch's default]  json=<file> (write every run's result). `rounds=0 methods=` evaluates the
//! pre-trained model only.
//!
//! Every time is printed as wall clock and as this process's CPU time (Linux `/proc/self/stat`): on a shared
//! machine the wall clock measures the other jobs too, while one thread's CPU time measures the work. With
//! `threads=1` the timing is per method (`time_steps` once per method) so that each gets its own CPU figure.

use std::collections::BTreeMap;
use std::time::Instant;

use tram_core::{BaseConfig, Decay, LrSchedule, MethodConfig, MethodName, OptimizerConfig};
use tram_task::{DeviceChoice, Domain, Evaluation, RunContext, RunSettings, Selection, Split, Task};
use tram_text::lm::CausalLmConfig;
use tram_text::trainable::{NoiseAt, Trainable};

const TABLE4: [&str; 11] =
    ["base", "sam", "asam", "fsam", "trpo", "r3f", "mesa", "tram-x", "tram-prev", "tram-pretrained", "tram-fisher"];

fn summary(evals: &[Evaluation]) -> (f64, f64, f64) {
    let get = |d: Domain, s: Split| evals.iter().filter(|e| e.domain == d && e.split == s).collect::<Vec<_>>();
    let val = get(Domain::InDomain, Split::Validation)[0].value;
    let test = get(Domain::InDomain, Split::Test)[0].value;
    let zs = get(Domain::ZeroShot, Split::Test);
    (val, test, zs.iter().map(|e| e.value).sum::<f64>() / zs.len() as f64)
}

/// User + system CPU seconds of this process so far (Linux; NaN elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return f64::NAN };
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|x| x.parse().ok()).collect();
    if f.len() == 2 {
        (f[0] + f[1]) / 100.0
    } else {
        f64::NAN
    }
}

/// Wall and CPU seconds since `(wall, cpu)`.
fn since(start: (Instant, f64)) -> String {
    format!("{:.1} s wall, {:.1} s CPU", start.0.elapsed().as_secs_f64(), cpu_seconds() - start.1)
}

fn now() -> (Instant, f64) {
    (Instant::now(), cpu_seconds())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: BTreeMap<String, String> = std::env::args()
        .skip(1)
        .map(|a| a.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or(format!("`{a}`: key=value")))
        .collect::<Result<_, _>>()?;
    let get = |k: &str, d: &str| args.get(k).cloned().unwrap_or_else(|| d.to_string());
    let num = |k: &str, d: &str| get(k, d).parse::<f64>().map_err(|e| format!("{k}: {e}"));
    let trainable = match get("trainable", "top-2").as_str() {
        "all" => Trainable::All,
        t => Trainable::TopLayers(t.strip_prefix("top-").ok_or("trainable=all|top-K")?.parse()?),
    };
    let config = CausalLmConfig {
        train_domain: get("domain", "learned"),
        zero_shot_domains: args.get("zero_shot").map(|z| z.split(',').map(str::to_string).collect()),
        block_len: num("block", "128")? as usize,
        eval_blocks: num("eval_blocks", "16")? as usize,
        validation_blocks: num("eval_blocks", "16")? as usize,
        trainable,
        noise_at: if get("noise_at", "embeddings") == "cached" { NoiseAt::Cached } else { NoiseAt::Embeddings },
        ..CausalLmConfig::default()
    };
    if let Some(n) = args.get("threads") {
        tch::set_num_threads(n.parse()?);
    }
    println!("threads: {}", tch::get_num_threads());
    let t = now();
    let task = config.build()?;
    println!("build: {}\n{}", since(t), task.describe());
    for s in task.sets() {
        println!(
            "  {:>16} {:>10} {:>10}: {:>3} blocks, {:>5} scored tokens of {:>6}",
            s.name,
            s.domain.as_str(),
            s.split.as_str(),
            s.blocks,
            s.predicted_tokens,
            s.text_tokens
        );
    }
    let t = now();
    let pre = task.evaluate_pretrained(DeviceChoice::Cpu)?;
    println!("pre-trained evaluation: {} (of which frozen-prefix cache {:.1} s wall)", since(t), task.cache_seconds());
    let t = now();
    let _ = task.evaluate_pretrained(DeviceChoice::Cpu)?;
    println!("one evaluation from the cache: {}", since(t));
    for e in &pre {
        println!("  {:>16} {:>10} {:>10}: perplexity {:6.2}", e.set, e.domain.as_str(), e.split.as_str(), e.value);
    }
    let (v0, t0, z0) = summary(&pre);
    println!("pre-trained: validation {v0:.2}, in-domain test {t0:.2}, zero-shot mean {z0:.2}");
    // How far blocks of the same texts differ: why methods are compared on the same blocks (paired).
    let mut blocks: Vec<f64> = pre.iter().flat_map(|e| e.per_example.iter().map(|nll| nll.exp())).collect();
    blocks.sort_by(f64::total_cmp);
    let q = |p: f64| blocks[((blocks.len() - 1) as f64 * p).round() as usize];
    println!(
        "pre-trained per-block perplexity over {} blocks: min {:.1}, quartiles {:.1} / {:.1} / {:.1}, max {:.1}",
        blocks.len(),
        q(0.0),
        q(0.25),
        q(0.5),
        q(0.75),
        q(1.0)
    );

    let steps = num("steps", "40")? as usize;
    let epochs = num("epochs", "2")? as usize;
    let batch = num("batch", "4")? as usize;
    let lr = num("lr", "3e-4")?;
    let warmup = num("warmup", "0")? as u64;
    let seed = num("seed", "0")? as u64;
    // `method` or `method@lr`.
    let settings = |method: &str| -> Result<RunSettings, Box<dyn std::error::Error>> {
        let (method, lr) = match method.split_once('@') {
            Some((m, l)) => (m, l.parse::<f64>()?),
            None => (method, lr),
        };
        let schedule =
            LrSchedule { decay: Decay::Polynomial { power: 1.0 }, warmup_steps: warmup, ..LrSchedule::constant(lr) };
        let base = BaseConfig::Adam { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.0 };
        let opt = OptimizerConfig {
            seed,
            ..OptimizerConfig::new(MethodConfig::new(MethodName::parse(method)?), base, schedule)
        };
        Ok(RunSettings {
            device: DeviceChoice::Cpu,
            max_train_batches: Some(steps.div_ceil(epochs)),
            selection: Selection::BestValidation,
            ..RunSettings::new(opt, epochs, batch)
        })
    };

    let rounds = num("rounds", "3")? as usize;
    if rounds > 0 {
        let timed = get("timing", &TABLE4.join(","));
        let methods: Vec<OptimizerConfig> =
            timed.split(',').map(|m| settings(m).map(|s| s.optimizer)).collect::<Result<_, _>>()?;
        let t = now();
        // One thread: each method timed alone, so that its CPU time is its own.
        let alone = tch::get_num_threads() == 1;
        let mut timings = vec![];
        let mut cpu = vec![];
        if alone {
            for m in &methods {
                let c = cpu_seconds();
                timings.extend(task.time_steps(&settings("base")?, std::slice::from_ref(m), rounds)?);
                cpu.push((cpu_seconds() - c) / (rounds + 1) as f64);
            }
        } else {
            timings = task.time_steps(&settings("base")?, &methods, rounds)?;
            cpu = vec![f64::NAN; methods.len()];
        }
        println!("step timing ({rounds} rounds after 1 warm-up, batch {batch}): {}", since(t));
        let base_ms = timings[0].median_ms;
        for (t, c) in timings.iter().zip(&cpu) {
            println!(
                "  {:>16}: {:7.0} ms ({:4.2}× the first), CPU {:5.2} s/step, {}F/{}B, optimizer share {:4.1}%, \
                 extra memory {:.1} MB",
                t.method.name.as_str(),
                t.median_ms,
                t.median_ms / base_ms,
                c,
                t.forward_passes,
                t.backward_passes,
                100.0 * t.optimizer_share,
                t.extra_memory_bytes as f64 / 1e6
            );
        }
    }

    let mut results = BTreeMap::new();
    let methods = get("methods", "base,tram-prev");
    for method in methods.split(',').filter(|m| !m.is_empty()) {
        let run = settings(method)?;
        let t = now();
        let mut on_step = |r: &tram_core::StepReport| {
            if r.step.is_multiple_of(10) {
                println!("    step {:3}: loss {:.4} d {:?}", r.step, r.loss, r.divergence);
            }
        };
        let result = task.run(&run, &mut RunContext::new(&mut on_step))?;
        let e = result.selected_epoch().ok_or("no epoch")?;
        let (v, te, z) = summary(&e.evals);
        let train: f64 = result.epochs.iter().map(|e| e.train_seconds).sum();
        let eval: f64 = result.epochs.iter().map(|e| e.eval_seconds).sum();
        println!(
            "{method}: {} steps, epoch {} selected; validation {v0:.2} -> {v:.2}, in-domain {t0:.2} -> {te:.2}, \
             zero-shot mean {z0:.2} -> {z:.2}; train {train:.0} s ({:.2} s/step), eval {eval:.0} s; total {}",
            result.steps.len(),
            e.epoch,
            train / result.steps.len() as f64,
            since(t)
        );
        results.insert(method.to_string(), result);
    }
    if let Some(path) = args.get("json") {
        let out = serde_json::json!({ "pretrained": pre, "runs": results });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}
