//! Batch collection. Applying reports one by one in arrival order touches a
//! different group's memory almost every time; applying a batch bucketed by
//! group hash keeps each bucket's few groups in cache while their reports
//! are applied.

use super::group::Prepared;
use super::{Collected, Rollup};
use crate::appstats::StatsReport;

/// Reports prepared and bucketed at a time: bounds the scratch memory
/// (two buffers of this many 112-byte records).
const CHUNK: usize = 1 << 18;
/// Aim for about this many groups per bucket: their hot parts fit in L2.
const GROUPS_PER_BUCKET: usize = 128;
const MAX_BUCKET_BITS: u32 = 12;

#[derive(Debug, Default)]
pub(super) struct Scratch {
    prepared: Vec<Prepared>,
    sorted: Vec<Prepared>,
    starts: Vec<usize>,
    /// Tests use many buckets on small batches.
    #[cfg(test)]
    pub force_bits: Option<u32>,
}

/// What [`Rollup::collect_batch`] did with its reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchCollected {
    pub new: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub dropped: usize,
}

impl BatchCollected {
    fn add(&mut self, outcome: Collected) {
        match outcome {
            Collected::New => self.new += 1,
            Collected::Updated => self.updated += 1,
            Collected::Unchanged => self.unchanged += 1,
            Collected::Dropped => self.dropped += 1,
        }
    }

    /// Reports taken (new, updated or unchanged).
    pub fn taken(&self) -> usize {
        self.new + self.updated + self.unchanged
    }
}

impl Rollup {
    /// Collects `reports` as [`Rollup::collect_within`] would one by one in
    /// order, but faster: the reports of one session (which always share a
    /// group) keep their order, while different groups' reports are applied
    /// bucket by bucket. Only when the budget runs out can the choice of
    /// which new sessions are dropped differ from one-by-one collection.
    pub fn collect_batch(&mut self, reports: &[StatsReport], budget: usize) -> BatchCollected {
        let mut out = BatchCollected::default();
        let mut scratch = std::mem::take(&mut self.scratch);
        for chunk in reports.chunks(CHUNK) {
            self.collect_chunk(chunk, budget, &mut scratch, &mut out);
        }
        self.scratch = scratch;
        // Slugs of reports that formed no group.
        self.slugs.sweep();
        out
    }

    fn collect_chunk(
        &mut self,
        chunk: &[StatsReport],
        budget: usize,
        s: &mut Scratch,
        out: &mut BatchCollected,
    ) {
        s.prepared.clear();
        let intern = self.ablation.intern_slugs;
        for (i, r) in chunk.iter().enumerate() {
            let slug = if intern {
                self.slugs.intern(&self.hasher, &r.slug_or_port)
            } else {
                i as u32
            };
            match Prepared::new(r, slug, self.window_ns, &self.hasher, !intern) {
                Some(p) => s.prepared.push(p),
                None => out.add(Collected::Dropped),
            }
        }
        let groups = self.groups.len().max(chunk.len() / 64);
        let bits = (groups / GROUPS_PER_BUCKET)
            .max(1)
            .next_power_of_two()
            .trailing_zeros()
            .min(MAX_BUCKET_BITS);
        #[cfg(test)]
        let bits = s.force_bits.unwrap_or(bits);
        let bits = if self.ablation.bucket_sort { bits } else { 0 };
        let text = |p: &Prepared| (!intern).then(|| chunk[p.slug as usize].slug_or_port.as_str());
        if bits == 0 {
            for p in &s.prepared {
                out.add(self.apply(p, budget, text(p)));
            }
            return;
        }
        // A stable counting sort by the hash's top bits.
        let bucket = |p: &Prepared| (p.hash >> (64 - bits)) as usize;
        s.starts.clear();
        s.starts.resize((1 << bits) + 1, 0);
        for p in &s.prepared {
            s.starts[bucket(p) + 1] += 1;
        }
        for i in 1..s.starts.len() {
            s.starts[i] += s.starts[i - 1];
        }
        s.sorted.clear();
        s.sorted.resize(
            s.prepared.len(),
            s.prepared.first().copied().unwrap_or_else(|| unreachable!()),
        );
        for p in &s.prepared {
            let at = &mut s.starts[bucket(p)];
            s.sorted[*at] = *p;
            *at += 1;
        }
        for p in &s.sorted {
            out.add(self.apply(p, budget, text(p)));
        }
    }
}

#[cfg(test)]
impl Rollup {
    pub(crate) fn force_bucket_bits(&mut self, bits: u32) {
        self.scratch.force_bits = Some(bits);
    }
}
