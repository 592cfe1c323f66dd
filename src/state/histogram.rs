//! A cumulative Prometheus histogram in seconds, with merge and encoding.

use super::codec::{R, SnapshotError, W, check_count, check_finite};

/// A cumulative Prometheus histogram in seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecondsHistogram {
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl SecondsHistogram {
    pub fn observe(&mut self, bounds: &[f64], secs: f64) {
        if self.counts.len() != bounds.len() {
            self.counts = vec![0; bounds.len()];
        }
        for (c, b) in self.counts.iter_mut().zip(bounds) {
            if secs <= *b {
                *c += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    pub fn merge(&mut self, o: &SecondsHistogram) {
        if self.counts.len() < o.counts.len() {
            self.counts.resize(o.counts.len(), 0);
        }
        for (a, x) in self.counts.iter_mut().zip(&o.counts) {
            *a += x;
        }
        self.sum += o.sum;
        self.count += o.count;
    }

    pub fn write(&self, w: &mut W) {
        w.len(self.counts.len());
        for c in &self.counts {
            w.u64(*c);
        }
        w.f64(self.sum);
        w.u64(self.count);
    }

    pub fn read(r: &mut R<'_>) -> Result<SecondsHistogram, SnapshotError> {
        let n = r.len(8)?;
        let mut counts = Vec::with_capacity(n);
        for _ in 0..n {
            counts.push(r.u64()?);
        }
        let sum = check_finite("histogram sum", r.f64()?)?;
        let count = check_count("histogram count", r.u64()?)?;
        // Cumulative buckets: each holds at most every observation.
        if counts.iter().any(|&c| c > count) {
            return Err(SnapshotError::Invalid("histogram bucket above its count"));
        }
        Ok(SecondsHistogram { counts, sum, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observes_cumulatively_and_merges_by_adding() {
        let bounds = [60.0, 300.0];
        let mut a = SecondsHistogram::default();
        a.observe(&bounds, 30.0);
        a.observe(&bounds, 120.0);
        let mut b = SecondsHistogram::default();
        b.observe(&bounds, 600.0);
        // le=60: 30; le=300: 30, 120; 600 only in the count.
        assert_eq!(a.counts, vec![1, 2]);
        let mut all = SecondsHistogram::default();
        all.merge(&a);
        all.merge(&b);
        assert_eq!(all.counts, vec![1, 2]);
        assert_eq!((all.sum, all.count), (750.0, 3));
        let mut w = W(Vec::new());
        all.write(&mut w);
        assert_eq!(SecondsHistogram::read(&mut R::new(&w.0)), Ok(all));
    }
}
