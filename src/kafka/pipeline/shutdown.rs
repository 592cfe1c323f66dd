//! The bounded shutdown, all within `kafka.shutdown_timeout`: wait for
//! dead-letter acknowledgements, publish the last changes, write the final
//! checkpoint (or the final partition snapshots), commit synchronously, deliver what is queued, flush and close
//! the clients. Every step that does not finish in time is a problem in the
//! [`ShutdownReport`] (the process then exits non-zero).

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::Producer;
use tokio::time::{Instant, timeout_at};

use super::state::Loop;
use super::{ShutdownReport, wall_ms};
use crate::kafka::context::commit_result;
use crate::telemetry::describe;
use crate::telemetry::{self, CommitTrigger, Stream};

impl Loop {
    /// Shuts down by `deadline`; see the module docs.
    pub async fn finish(mut self, deadline: Instant) -> ShutdownReport {
        let mut report = ShutdownReport::default();
        telemetry::ShuttingDown {
            dead_letters_in_flight: self.dead_letters.len(),
        }
        .emit();
        self.shutting_down = true;
        self.finish_dead_letters(deadline, &mut report).await;
        self.after_engine_change(None, wall_ms());
        self.publish();
        if self.checkpoint.is_some() {
            self.final_checkpoint(deadline, &mut report).await;
        }
        for p in self.final_saves(deadline).await {
            report.problem(p);
        }
        self.final_commit(deadline, &mut report).await;
        self.finish_deliveries(deadline, &mut report).await;
        self.close(deadline, &mut report).await;
        report
    }

    async fn finish_dead_letters(&mut self, deadline: Instant, report: &mut ShutdownReport) {
        while !self.dead_letters.is_empty() {
            match timeout_at(deadline, self.dead_letters.join_next()).await {
                Ok(Some(Ok(done))) => self.dead_letter_done(done),
                Ok(Some(Err(e))) => telemetry::TaskFailed {
                    task: "dead-letter delivery",
                    error: &e,
                }
                .emit(),
                Ok(None) => break,
                Err(_) => {
                    self.dead_letters.abort_all();
                    break;
                }
            }
        }
        let left = telemetry::metrics()
            .delivery_pending
            .with_label_values(&[Stream::DeadLetter.as_str()])
            .get();
        if left > 0 {
            report.problem(format!(
                "{left} dead-letter records not delivered (their offsets stay uncommitted)"
            ));
        }
    }

    /// The final checkpoint (after one still being written), whose offsets
    /// the final commit then commits.
    async fn final_checkpoint(&mut self, deadline: Instant, report: &mut ShutdownReport) {
        while let Ok(Some(done)) = timeout_at(deadline, self.checkpoint_writes.join_next()).await {
            self.checkpoint_done(done);
        }
        self.checkpoint();
        match timeout_at(deadline, self.checkpoint_writes.join_next()).await {
            Ok(Some(done)) => {
                if !self.checkpoint_done(done) {
                    report.problem("final checkpoint write failed");
                }
            }
            Ok(None) => {}
            Err(_) => report.problem("final checkpoint write did not finish in time"),
        }
    }

    async fn final_commit(&mut self, deadline: Instant, report: &mut ShutdownReport) {
        // A periodic commit still running finishes first.
        if let Ok(Some(done)) = timeout_at(deadline, self.commits.join_next()).await {
            self.commit_done(done);
        }
        self.store_moved();
        let consumer = self.consumer.clone();
        let commit = tokio::task::spawn_blocking(move || {
            let r = consumer.commit_consumer_state(CommitMode::Sync);
            let offsets = consumer
                .committed(Duration::from_secs(1))
                .map(|t| describe(&t))
                .unwrap_or_default();
            (r, offsets)
        });
        match timeout_at(deadline, commit).await {
            Ok(Ok((r, offsets))) => {
                let result = commit_result(&r, &offsets);
                if let telemetry::CommitResult::Error(e) = &result {
                    report.problem(format!("final offset commit failed: {e}"));
                }
                telemetry::CommitCompleted {
                    trigger: CommitTrigger::Shutdown,
                    result,
                }
                .emit();
            }
            Ok(Err(e)) => report.problem(format!("final offset commit panicked: {e}")),
            Err(_) => report.problem("final offset commit did not finish in time"),
        }
    }

    /// Output and alert deliveries finish; what is still undelivered at the
    /// deadline is abandoned, and said so.
    async fn finish_deliveries(&mut self, deadline: Instant, report: &mut ShutdownReport) {
        // One more batch of each after the last publish; a failed batch is
        // not tried again (no tick comes).
        loop {
            self.start_deliveries();
            if self.flights.is_empty() {
                break;
            }
            match timeout_at(deadline, self.flights.join_next()).await {
                Ok(Some(Ok(done))) => self.flight_done(done),
                Ok(Some(Err(e))) => telemetry::TaskFailed {
                    task: "output or alerts delivery",
                    error: &e,
                }
                .emit(),
                Ok(None) => break,
                Err(_) => {
                    self.flights.abort_all();
                    break;
                }
            }
        }
        for s in Stream::ALL {
            let left = telemetry::metrics()
                .delivery_pending
                .with_label_values(&[s.as_str()])
                .get();
            if left > 0 {
                telemetry::DeliveryAbandoned {
                    stream: s,
                    records: left as u64,
                }
                .emit();
                report.problem(format!(
                    "{left} {} records undelivered at the deadline",
                    s.as_str()
                ));
            }
        }
    }

    /// Flushes and closes the clients off the runtime: librdkafka calls block.
    async fn close(self, deadline: Instant, report: &mut ShutdownReport) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Loop {
            consumer, producer, ..
        } = self;
        let close = tokio::task::spawn_blocking(move || {
            let flushed = producer.flush(remaining);
            drop(producer);
            drop(consumer);
            flushed
        });
        match timeout_at(deadline + Duration::from_millis(500), close).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => report.problem(format!("producer flush failed: {e}")),
            Ok(Err(e)) => report.problem(format!("closing the clients panicked: {e}")),
            Err(_) => report.problem("closing the Kafka clients did not finish in time"),
        }
    }
}
