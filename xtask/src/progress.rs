//! What a running `pixreg` child is doing, read from its run's `log.txt` (children run
//! `--quiet`; the log gets one timestamped line every `display_every` steps, one per epoch and
//! one per attack), and an ETA from the wall time elapsed since xtask started watching it.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Instant;

/// Where a child stands in its current phase (training or evaluating).
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// `training` or `evaluating`.
    pub name: &'static str,
    /// Fraction of the phase done, in [0, 1].
    pub fraction: f64,
    /// What the log says, e.g. `epoch 3/10 step 200/938` or `evaluating boundary (5/6)`.
    pub what: String,
}

/// The phase a `log.txt` line reports, if it is a progress line.
pub fn parse_line(line: &str) -> Option<Phase> {
    // "<RFC 3339 stamp> <message>"
    let message = line.split_once(' ').map_or(line, |(_, m)| m);
    if let Some(rest) = message.strip_prefix("evaluating ") {
        // "boundary (5/6)", or with progress within the attack "boundary (5/6): repeat 2/5
        // done in 61.0 s" / "pgd-linf (6/7): ε 3/6 done (0.1) after 12.0 s"
        let (head, within) = match rest.split_once("): ") {
            Some((head, tail)) => (format!("{head})"), Some(tail)),
            None => (rest.to_string(), None),
        };
        let (attack, count) = head.rsplit_once(" (")?;
        let (k, n) = fraction_of(count.strip_suffix(')')?)?;
        let within = match within {
            Some(tail) => {
                let mut words = tail.split_whitespace();
                let unit = words.next()?;
                let (r, m) = fraction_of(words.next()?)?;
                Some((unit.to_string(), r, m))
            }
            None => None,
        };
        return Some(Phase {
            name: "evaluating",
            fraction: (k - 1.0 + within.as_ref().map_or(0.0, |(_, r, m)| r / m)) / n,
            what: match within {
                Some((unit, r, m)) => {
                    format!("evaluating {attack} ({count}, {unit} {r}/{m} done")
                }
                None => format!("evaluating {attack} ({count}"),
            },
        });
    }
    let rest = message.strip_prefix("epoch ")?;
    let (head, _) = rest.split_once(':')?;
    let (epoch, step) = match head.split_once(" step ") {
        Some((e, s)) => (fraction_of(e)?, Some(fraction_of(s)?)),
        None => (fraction_of(head)?, None),
    };
    let (e, epochs) = epoch;
    let fraction = match step {
        Some((s, steps)) => ((e - 1.0) * steps + s) / (epochs * steps),
        None => e / epochs,
    };
    Some(Phase {
        name: "training",
        fraction: fraction.clamp(0.0, 1.0),
        what: match step {
            Some(_) => format!("epoch {head}"),
            None => format!("epoch {head} done"),
        },
    })
}

/// `k/n` with 1 ≤ k ≤ n.
fn fraction_of(text: &str) -> Option<(f64, f64)> {
    let (k, n) = text.trim().split_once('/')?;
    let (k, n): (u64, u64) = (k.parse().ok()?, n.parse().ok()?);
    (k >= 1 && k <= n).then_some((k as f64, n as f64))
}

/// The last progress line of the log at `path` after its first `from` bytes (reading only
/// its end).
pub fn last_phase(path: &Path, from: u64) -> Option<Phase> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(8192).max(from)))
        .ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    // The seek may land inside a multi-byte character (the log has "–" and "·").
    String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .find_map(parse_line)
}

/// Follows one child: the phase it is in and when xtask first saw it there.
#[derive(Debug)]
pub struct Watch {
    started: Instant,
    phase: Option<(Phase, Instant, f64)>,
}

impl Default for Watch {
    fn default() -> Self {
        Self::new()
    }
}

impl Watch {
    /// Starts watching now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            phase: None,
        }
    }

    /// Records the latest phase; returns it with the seconds left in it, estimated from the
    /// wall time since xtask first saw this phase and the progress made since (a resumed run
    /// starts part-way, so its first fraction is not progress).
    pub fn update(&mut self, latest: Option<Phase>) -> Option<(Phase, Option<f64>)> {
        let latest = latest?;
        let now = Instant::now();
        match &mut self.phase {
            Some((phase, _, _)) if phase.name == latest.name => *phase = latest,
            _ => self.phase = Some((latest.clone(), now, latest.fraction)),
        }
        let (phase, since, first) = self.phase.as_ref()?;
        let done = phase.fraction - first;
        let left = (done > 1e-9)
            .then(|| now.duration_since(*since).as_secs_f64() * (1.0 - phase.fraction) / done);
        Some((phase.clone(), left))
    }

    /// Seconds since watching started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_steps_epochs_and_attacks_are_read_from_log_lines() {
        let step =
            parse_line("2026-12-03T12:00:00Z epoch 3/10 step 200/1000: ce 0.300 batch acc 90.0 %")
                .unwrap();
        assert_eq!(step.name, "training");
        assert!((step.fraction - 0.22).abs() < 1e-12);
        assert_eq!(step.what, "epoch 3/10 step 200/1000");
        let epoch = parse_line(
            "2026-12-03T12:00:00Z epoch 4/10: lr 0.03000 valid loss 0.3 test acc 90 % (60 s)",
        )
        .unwrap();
        assert_eq!(
            (epoch.fraction, epoch.what.as_str()),
            (0.4, "epoch 4/10 done")
        );
        let attack = parse_line("2026-12-03T12:00:00Z evaluating boundary (5/6)").unwrap();
        assert_eq!(attack.name, "evaluating");
        assert!((attack.fraction - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(attack.what, "evaluating boundary (5/6)");
        let repeat =
            parse_line("2026-12-03T12:00:00Z evaluating boundary (5/6): repeat 2/5 done in 61.0 s")
                .unwrap();
        assert!((repeat.fraction - (4.0 + 0.4) / 6.0).abs() < 1e-12);
        assert_eq!(repeat.what, "evaluating boundary (5/6), repeat 2/5 done");
        let pgd = parse_line(
            "2026-12-03T12:00:00Z evaluating pgd-linf (2/2): ε 3/6 done (0.1) after 12.0 s",
        )
        .unwrap();
        assert!((pgd.fraction - (1.0 + 0.5) / 2.0).abs() < 1e-12);
        assert_eq!(pgd.what, "evaluating pgd-linf (2/2), ε 3/6 done");
        for other in [
            "2026-12-03T12:00:00Z resuming after epoch 3",
            "2026-12-03T12:00:00Z run x started: epoch = 3",
            "2026-12-03T12:00:00Z epoch 11/10: nonsense",
            "2026-12-03T12:00:00Z evaluated boundary in 3.0 s",
        ] {
            assert_eq!(parse_line(other), None, "{other}");
        }
    }

    #[test]
    fn the_eta_counts_only_progress_made_while_watched() {
        let mut watch = Watch::new();
        let at = |f: f64| Phase {
            name: "training",
            fraction: f,
            what: String::new(),
        };
        // A resumed run first seen at 30 %: no progress yet, no estimate.
        assert_eq!(watch.update(Some(at(0.3))).unwrap().1, None);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (_, left) = watch.update(Some(at(0.4))).unwrap();
        // 0.1 in ≥ 50 ms: 0.6 left takes ≥ 300 ms.
        assert!(left.unwrap() >= 0.3, "{left:?}");
        // A new phase restarts the clock.
        let (phase, left) = watch
            .update(Some(Phase {
                name: "evaluating",
                ..at(0.0)
            }))
            .unwrap();
        assert_eq!((phase.name, left), ("evaluating", None));
    }
}
