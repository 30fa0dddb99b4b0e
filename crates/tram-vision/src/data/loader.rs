//! Batches decoded and transformed by worker threads ahead of the model. Batch b of an epoch is built by
//! worker b mod W and read back in order, and every image's augmentation is seeded by (seed, epoch, index), so
//! the batches are the same whatever the number of workers.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::{Dataset, OnCorrupt, SplitMix64, Transform};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub shuffle: bool,
    /// Leave out the last, smaller batch.
    pub drop_last: bool,
    pub seed: u64,
    /// Decoding threads.
    pub workers: usize,
    /// Batches each worker may have ready ahead of the model.
    pub prefetch: usize,
    pub on_corrupt: OnCorrupt,
}

impl LoaderConfig {
    pub fn train(batch_size: usize, seed: u64) -> Self {
        Self { batch_size, shuffle: true, drop_last: true, seed, workers: 1, prefetch: 2, on_corrupt: OnCorrupt::Skip }
    }

    pub fn eval(batch_size: usize) -> Self {
        Self {
            batch_size,
            shuffle: false,
            drop_last: false,
            seed: 0,
            workers: 1,
            prefetch: 2,
            on_corrupt: OnCorrupt::Skip,
        }
    }
}

/// One batch in host memory: `[N, 3, S, S]` pixels, channel-major, and N labels.
#[derive(Debug, Clone)]
pub struct HostBatch {
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
    pub size: u32,
    /// Images left out because they did not decode (`OnCorrupt::Skip`), by location.
    pub skipped: Vec<String>,
}

impl HostBatch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `(images [N, 3, S, S] f32, labels [N] i64)` on `device`.
    pub fn to_tensors(&self, device: Device) -> (Tensor, Tensor) {
        let s = self.size as i64;
        let images = Tensor::from_slice(&self.pixels).view([self.len() as i64, 3, s, s]).to_device(device);
        let labels = Tensor::from_slice(&self.labels).to_kind(Kind::Int64).to_device(device);
        (images, labels)
    }
}

/// An epoch of batches; iterate it. Dropping it stops the workers.
pub struct Loader {
    receivers: Vec<Receiver<Result<HostBatch>>>,
    next: usize,
    batches: usize,
}

impl Loader {
    /// The batches of `dataset` for `epoch` (the shuffle and the augmentation depend on it).
    pub fn new(dataset: &Dataset, transform: Transform, config: &LoaderConfig, epoch: u64) -> Result<Self> {
        Self::starting_at(dataset, transform, config, epoch, 0)
    }

    /// The batches of `epoch` from batch `start` on: batch k is the same as in [`Loader::new`]'s epoch (the
    /// order and every image's augmentation depend on the seed, the epoch and the image, not on what came before).
    pub fn starting_at(
        dataset: &Dataset,
        transform: Transform,
        config: &LoaderConfig,
        epoch: u64,
        start: usize,
    ) -> Result<Self> {
        if config.batch_size == 0 || config.workers == 0 {
            return Err(Error::Config("loader: batch_size and workers must be at least 1".into()));
        }
        let mut order = dataset.indices.clone();
        if config.shuffle {
            SplitMix64(mix(config.seed, epoch, u64::MAX)).shuffle(&mut order);
        }
        let mut chunks: Vec<Vec<usize>> = order.chunks(config.batch_size).map(<[usize]>::to_vec).collect();
        if config.drop_last && chunks.last().is_some_and(|c| c.len() < config.batch_size) {
            chunks.pop();
        }
        chunks.drain(..start.min(chunks.len()));
        let batches = chunks.len();
        let workers = config.workers.min(batches.max(1));
        let mut receivers = vec![];
        for w in 0..workers {
            let (tx, rx) = sync_channel(config.prefetch.max(1));
            receivers.push(rx);
            let mine: Vec<Vec<usize>> = chunks.iter().skip(w).step_by(workers).cloned().collect();
            let source = dataset.source.clone();
            let (seed, on_corrupt) = (config.seed, config.on_corrupt);
            thread::Builder::new()
                .name(format!("tram-vision-loader-{w}"))
                .spawn(move || {
                    for chunk in mine {
                        let size = transform.size;
                        let mut batch = HostBatch {
                            pixels: Vec::with_capacity(chunk.len() * 3 * (size * size) as usize),
                            labels: Vec::with_capacity(chunk.len()),
                            size,
                            skipped: vec![],
                        };
                        let mut failed = None;
                        for &i in &chunk {
                            match source.load(i) {
                                Ok(img) => {
                                    let mut rng = SplitMix64(mix(seed, epoch, i as u64));
                                    transform.apply_into(&img, &mut rng, &mut batch.pixels);
                                    batch.labels.push(source.label(i));
                                }
                                Err(reason) => {
                                    let location = source.location(i);
                                    if on_corrupt == OnCorrupt::Fail {
                                        failed = Some(Error::CorruptImage { location, reason });
                                        break;
                                    }
                                    eprintln!("warning: skipping corrupt image {location}: {reason}");
                                    batch.skipped.push(location);
                                }
                            }
                        }
                        let stop = failed.is_some();
                        if tx.send(failed.map_or(Ok(batch), Err)).is_err() || stop {
                            return;
                        }
                    }
                })
                .map_err(|e| Error::Loader(format!("cannot start a loader thread: {e}")))?;
        }
        Ok(Self { receivers, next: 0, batches })
    }

    /// Batches in this epoch.
    pub fn batches(&self) -> usize {
        self.batches
    }
}

impl Iterator for Loader {
    type Item = Result<HostBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.batches {
            return None;
        }
        let rx = &self.receivers[self.next % self.receivers.len()];
        self.next += 1;
        match rx.recv() {
            Ok(Ok(b)) => Some(Ok(b)),
            Ok(Err(e)) => {
                self.next = self.batches;
                Some(Err(e))
            }
            Err(_) => {
                self.next = self.batches;
                Some(Err(Error::Loader("a loader thread stopped unexpectedly".into())))
            }
        }
    }
}

fn mix(seed: u64, epoch: u64, index: u64) -> u64 {
    let mut r =
        SplitMix64(seed ^ epoch.wrapping_mul(0xd6e8_feb8_6659_fd93) ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    r.next_u64()
}
