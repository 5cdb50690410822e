//! Bridges the text layer and the kernel: reads the table in dump order, applies parsed restore input.

use ipvs_netlink::Error;
use ipvs_netlink::ipvs::{IpvsClient, Operation};

use super::{Command, RestoreLine, TableEntry};

/// Operations per `apply` call: large enough to batch, small enough to keep replies bounded.
const BATCH: usize = 256;

/// What restore needs from the kernel; a trait so the batching is testable without one.
pub trait RestoreTarget {
    fn apply(&mut self, ops: &[Operation]) -> Vec<Result<(), Error>>;
    fn flush(&mut self) -> Result<(), Error>;
}

impl RestoreTarget for IpvsClient {
    fn apply(&mut self, ops: &[Operation]) -> Vec<Result<(), Error>> {
        IpvsClient::apply(self, ops)
    }

    fn flush(&mut self) -> Result<(), Error> {
        IpvsClient::flush(self)
    }
}

/// Every service with its real servers, in the kernel's dump order (what the formatters expect).
pub fn read_table(client: &mut IpvsClient) -> Result<Vec<TableEntry>, Error> {
    let services = client.services()?;
    let mut table = Vec::with_capacity(services.len());
    for se in services {
        let dests = client.destinations(&se.service.key)?;
        table.push((se, dests));
    }
    Ok(table)
}

/// A restore line the kernel refused.
#[derive(Debug)]
pub struct ApplyFailure {
    pub line: usize,
    /// What the line asked for, e.g. `add service TCP 10.0.0.1:80`.
    pub what: String,
    pub error: Error,
}

fn operation(cmd: &Command) -> Option<Operation> {
    Some(match cmd {
        Command::AddService(s) => Operation::AddService(s.clone()),
        Command::EditService(s) => Operation::EditService(s.clone()),
        Command::DeleteService(k) => Operation::DeleteService(*k),
        Command::AddDestination(k, d) => Operation::AddDestination(*k, *d),
        Command::EditDestination(k, d) => Operation::EditDestination(*k, *d),
        Command::DeleteDestination(k, a) => Operation::DeleteDestination(*k, *a),
        Command::Clear => return None,
    })
}

/// Sends the pending operations in chunks and records the ones the kernel refused.
fn send(
    target: &mut impl RestoreTarget,
    pending: &mut Vec<(usize, Operation)>,
    failures: &mut Vec<ApplyFailure>,
) {
    for chunk in pending.chunks(BATCH) {
        let ops: Vec<Operation> = chunk.iter().map(|(_, op)| op.clone()).collect();
        let results = target.apply(&ops);
        for ((line, op), result) in chunk.iter().zip(results) {
            if let Err(error) = result {
                failures.push(ApplyFailure {
                    line: *line,
                    what: op.to_string(),
                    error,
                });
            }
        }
    }
    pending.clear();
}

/// Applies the lines in order, batched between `-C` lines (a flush cannot join a batch).
///
/// Like the kernel, and like ipvsadm, it goes on after a failure: the result
/// lists every line that failed, with its line number.
pub fn apply_restore(target: &mut impl RestoreTarget, lines: &[RestoreLine]) -> Vec<ApplyFailure> {
    let mut failures = Vec::new();
    let mut pending: Vec<(usize, Operation)> = Vec::new();
    for l in lines {
        match operation(&l.command) {
            Some(op) => pending.push((l.line, op)),
            None => {
                send(target, &mut pending, &mut failures);
                if let Err(error) = target.flush() {
                    failures.push(ApplyFailure {
                        line: l.line,
                        what: "clear the table".to_string(),
                        error,
                    });
                }
            }
        }
    }
    send(target, &mut pending, &mut failures);
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvsadm::parse_restore;
    use ipvs_netlink::ipvs::ServiceKey;

    /// Records calls; refuses to add a service twice, as the kernel does.
    #[derive(Default)]
    struct Fake {
        calls: Vec<String>,
        services: Vec<ServiceKey>,
    }

    impl RestoreTarget for Fake {
        fn apply(&mut self, ops: &[Operation]) -> Vec<Result<(), Error>> {
            self.calls.push(format!("apply {}", ops.len()));
            ops.iter()
                .map(|op| match op {
                    Operation::AddService(s) if self.services.contains(&s.key) => {
                        Err(Error::ServiceExists(s.key))
                    }
                    Operation::AddService(s) => {
                        self.services.push(s.key);
                        Ok(())
                    }
                    _ => Ok(()),
                })
                .collect()
        }

        fn flush(&mut self) -> Result<(), Error> {
            self.calls.push("flush".into());
            self.services.clear();
            Ok(())
        }
    }

    #[test]
    fn batches_split_at_clear_and_failures_keep_line_numbers() {
        let input = "-A -t 10.0.0.1:80 -s rr\n-A -t 10.0.0.1:80 -s rr\n-C\n-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.1.1 -m\n";
        let lines = parse_restore(input).unwrap();
        let mut fake = Fake::default();
        let failures = apply_restore(&mut fake, &lines);
        assert_eq!(fake.calls, ["apply 2", "flush", "apply 2"]);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].line, 2);
        assert!(failures[0].error.to_string().contains("already exists"));
    }

    #[test]
    fn large_inputs_are_chunked() {
        let input: String = (1..=600)
            .map(|i| format!("-A -t 10.0.{}.{}:80 -s rr\n", i / 256, i % 256))
            .collect();
        let lines = parse_restore(&input).unwrap();
        let mut fake = Fake::default();
        assert!(apply_restore(&mut fake, &lines).is_empty());
        assert_eq!(fake.calls, ["apply 256", "apply 256", "apply 88"]);
    }
}
