//! What a scale simulation runs: the cluster's nodes, the drivers that submit work, task
//! batches (arrivals, durations, resource shapes, placement, argument sizes), placement groups,
//! actors, nodes that join or die at given times, and the network. Built in code with the
//! builder methods, or read from a small text description ([`Workload::parse`]):
//!
//! ```text
//! # one line per item; `#` starts a comment; sizes take KB, MB, GB; times are ms
//! nodes count=1000 cpu=8 labels=zone:a
//! nodes count=10 cpu=8 gpu=4 labels=zone:b
//! drivers count=20
//! tasks count=100000 cpu=1 duration=100..1000 at=0..10000
//! tasks count=5000 cpu=1 duration=50..200 at=0..5000 strategy=spread args=64MB
//! group name=train at=1000 strategy=strict_spread bundles=4*cpu:2/gpu:1 remove=60000
//! tasks count=400 cpu=1 duration=500 at=2000 strategy=group:train
//! actors count=50 cpu=1 at=0..1000 lifetime=20000 restarts=1
//! join at=5000 count=10 cpu=8
//! kill at=3000 nodes=5..8
//! network latency=1..5 loss=0.001 bandwidth=1GB
//! partition at=4000 until=6000 nodes=20..30
//! sync every=100
//! ```

use std::fmt;

use manta_proto::placement::PlacementStrategy;

/// A typed error in a workload description: the line, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadError {
    /// The line (from 1; 0: the workload as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "workload: {}", self.message)
        } else {
            write!(f, "workload line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for WorkloadError {}

/// Resources by name, as users write them (`CPU`, `GPU`, custom names).
pub type Amounts = Vec<(String, f64)>;

/// A kind of node, `count` of them.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeKind {
    /// How many.
    pub count: usize,
    /// Their resources.
    pub resources: Amounts,
    /// Their labels.
    pub labels: Vec<(String, String)>,
}

/// Where a batch's tasks ask to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// The default (hybrid) strategy.
    Default,
    /// Ray's SPREAD.
    Spread,
    /// In the placement group named so, in a bundle (`None`: any).
    Group {
        /// The group's name.
        name: String,
        /// The bundle.
        bundle: Option<u32>,
    },
}

/// A span of milliseconds, drawn uniformly (`from == to`: exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// From, ms.
    pub from: u64,
    /// To, ms (inclusive).
    pub to: u64,
}

impl Span {
    /// Exactly `ms`.
    pub fn at(ms: u64) -> Span {
        Span { from: ms, to: ms }
    }

    /// Between `from` and `to`.
    pub fn between(from: u64, to: u64) -> Span {
        Span { from: from.min(to), to: from.max(to) }
    }
}

/// `count` tasks of one shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskBatch {
    /// How many.
    pub count: usize,
    /// What each needs.
    pub resources: Amounts,
    /// How long each runs, ms.
    pub duration: Span,
    /// When each is submitted, ms (spread evenly over the span).
    pub arrival: Span,
    /// Where they ask to run.
    pub placement: Placement,
    /// Bytes of one argument, held by a random node's store (0: none).
    pub argument_bytes: u64,
    /// Retries of a task whose worker dies.
    pub retries: u32,
    /// The function's name (shapes differ by it).
    pub function: String,
}

/// A placement group created at a given time.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// Its name (tasks name it).
    pub name: String,
    /// When it is created, ms.
    pub at: u64,
    /// Its strategy.
    pub strategy: PlacementStrategy,
    /// Its bundles.
    pub bundles: Vec<Amounts>,
    /// When it is removed, ms (`None`: never).
    pub remove_at: Option<u64>,
}

/// `count` actors (dedicated leases held for their lifetime).
#[derive(Debug, Clone, PartialEq)]
pub struct ActorBatch {
    /// How many.
    pub count: usize,
    /// What each holds.
    pub resources: Amounts,
    /// When each is created, ms.
    pub arrival: Span,
    /// How long each lives once started, ms.
    pub lifetime: u64,
    /// Restarts after its node dies.
    pub restarts: u32,
}

/// Something that happens to the cluster at a given time.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterEvent {
    /// Nodes join.
    Join {
        /// When, ms.
        at: u64,
        /// What joins.
        kind: NodeKind,
    },
    /// Nodes die (indices in the order nodes were added, from 0).
    Kill {
        /// When, ms.
        at: u64,
        /// The first node.
        from: usize,
        /// The last node (inclusive).
        to: usize,
    },
    /// Nodes are cut off from everyone: what they send or are sent waits until it heals.
    Partition {
        /// When, ms.
        at: u64,
        /// Until, ms.
        until: u64,
        /// The first node.
        from: usize,
        /// The last node (inclusive).
        to: usize,
    },
}

/// The simulated network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Network {
    /// One-way delay bounds, ms (each message draws its own, so messages reorder).
    pub latency: Span,
    /// Chance that a message's packet is lost; the transport (QUIC) resends it after a
    /// retransmission timeout, so it arrives late, never twice or not at all.
    pub loss: f64,
    /// The retransmission timeout, ms.
    pub retransmit_ms: u64,
    /// Bytes per second between nodes (a task reading an argument held elsewhere waits for it).
    pub bandwidth: u64,
}

impl Default for Network {
    fn default() -> Self {
        // Bandwidth: the two-node transfer measured on this machine (docs/performance.md).
        Network { latency: Span::between(1, 3), loss: 0.0, retransmit_ms: 200, bandwidth: 1_000_000_000 }
    }
}

/// A whole workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The nodes at the start.
    pub nodes: Vec<NodeKind>,
    /// Submitting processes, each on its own home node (spread over the first nodes).
    pub drivers: usize,
    /// The task batches.
    pub tasks: Vec<TaskBatch>,
    /// The placement groups.
    pub groups: Vec<GroupSpec>,
    /// The actor batches.
    pub actors: Vec<ActorBatch>,
    /// Joins, deaths and partitions.
    pub events: Vec<ClusterEvent>,
    /// The network.
    pub network: Network,
    /// How often the GCS broadcasts the cluster's resources to every raylet, ms (Ray: 100).
    pub sync_ms: u64,
    /// How long a worker process takes to start, ms.
    pub worker_start_ms: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            nodes: Vec::new(),
            drivers: 1,
            tasks: Vec::new(),
            groups: Vec::new(),
            actors: Vec::new(),
            events: Vec::new(),
            network: Network::default(),
            sync_ms: 100,
            worker_start_ms: 50,
        }
    }
}

impl Workload {
    /// The workload `manta sim --nodes N --tasks M` runs: `nodes` nodes of `cpus` CPUs,
    /// `drivers` drivers, and `tasks` one-CPU tasks of 100 ms to 1 s submitted in the first
    /// second (a batch job, as Ray's `many_tasks` release test submits), a tenth of them SPREAD
    /// and a tenth reading a 16 MB argument held by some node.
    pub fn uniform(nodes: usize, cpus: u64, tasks: usize, drivers: usize) -> Workload {
        let _ = cpus;
        let window = 1_000;
        let spread = tasks / 10;
        let with_arguments = tasks / 10;
        let batch = |count, placement, argument_bytes, function: &str| TaskBatch {
            count,
            resources: vec![("CPU".into(), 1.0)],
            duration: Span::between(100, 1_000),
            arrival: Span::between(0, window),
            placement,
            argument_bytes,
            retries: 3,
            function: function.into(),
        };
        Workload {
            nodes: vec![NodeKind {
                count: nodes,
                resources: vec![("CPU".into(), cpus as f64)],
                labels: Vec::new(),
            }],
            drivers: drivers.clamp(1, nodes.max(1)),
            tasks: vec![
                batch(tasks - spread - with_arguments, Placement::Default, 0, "work"),
                batch(spread, Placement::Spread, 0, "spread"),
                batch(with_arguments, Placement::Default, 16_000_000, "reads"),
            ],
            ..Workload::default()
        }
    }

    /// Adds `count` nodes with `resources`.
    pub fn with_nodes(mut self, count: usize, resources: &[(&str, f64)]) -> Self {
        self.nodes.push(NodeKind { count, resources: amounts(resources), labels: Vec::new() });
        self
    }

    /// Sets the number of drivers.
    pub fn with_drivers(mut self, drivers: usize) -> Self {
        self.drivers = drivers;
        self
    }

    /// Adds a task batch.
    pub fn with_tasks(mut self, batch: TaskBatch) -> Self {
        self.tasks.push(batch);
        self
    }

    /// Adds a placement group.
    pub fn with_group(mut self, group: GroupSpec) -> Self {
        self.groups.push(group);
        self
    }

    /// Adds an actor batch.
    pub fn with_actors(mut self, actors: ActorBatch) -> Self {
        self.actors.push(actors);
        self
    }

    /// Adds a join, a death or a partition.
    pub fn with_event(mut self, event: ClusterEvent) -> Self {
        self.events.push(event);
        self
    }

    /// Nodes at the start.
    pub fn initial_nodes(&self) -> usize {
        self.nodes.iter().map(|kind| kind.count).sum()
    }

    /// Tasks in all.
    pub fn task_count(&self) -> usize {
        self.tasks.iter().map(|batch| batch.count).sum()
    }

    /// Checks what the simulation relies on: some node, a driver, groups named by tasks exist
    /// (and names are unique), killed nodes exist by then.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        let whole = |message: String| Err(WorkloadError { line: 0, message });
        if self.initial_nodes() == 0 {
            return whole("no nodes".into());
        }
        if self.drivers == 0 {
            return whole("no drivers".into());
        }
        if self.sync_ms == 0 {
            return whole("the resource broadcast period must be positive".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for group in &self.groups {
            if group.bundles.is_empty() {
                return whole(format!("group {} has no bundles", group.name));
            }
            if !names.insert(group.name.as_str()) {
                return whole(format!("two groups are named {}", group.name));
            }
        }
        for batch in &self.tasks {
            if let Placement::Group { name, bundle } = &batch.placement {
                let Some(group) = self.groups.iter().find(|group| &group.name == name) else {
                    return whole(format!("tasks name group {name}, which the workload lacks"));
                };
                if bundle.is_some_and(|index| index as usize >= group.bundles.len()) {
                    return whole(format!(
                        "bundle index {} is out of range: group {name} has {} bundles",
                        bundle.unwrap_or_default(),
                        group.bundles.len()
                    ));
                }
            }
        }
        let mut nodes = self.initial_nodes();
        let mut timeline: Vec<&ClusterEvent> = self.events.iter().collect();
        timeline.sort_by_key(|event| match event {
            ClusterEvent::Join { at, .. }
            | ClusterEvent::Kill { at, .. }
            | ClusterEvent::Partition { at, .. } => *at,
        });
        for event in timeline {
            match event {
                ClusterEvent::Join { kind, .. } => nodes += kind.count,
                ClusterEvent::Kill { from, to, .. } | ClusterEvent::Partition { from, to, .. }
                    if *to >= nodes =>
                {
                    return whole(format!("nodes {from}..{to}: only {nodes} nodes exist by then"));
                }
                ClusterEvent::Partition { at, until, .. } if until <= at => {
                    return whole(format!("a partition from {at} ms ends at {until} ms"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads a workload from its text description (see the module's documentation).
    pub fn parse(text: &str) -> Result<Workload, WorkloadError> {
        let mut workload = Workload::default();
        let mut drivers_given = false;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            let error = |message: String| WorkloadError { line, message };
            let mut words = content.split_whitespace();
            let kind = words.next().unwrap_or_default();
            let mut fields = Fields::new(words, line)?;
            match kind {
                "nodes" => workload.nodes.push(fields.node_kind()?),
                "drivers" => {
                    workload.drivers = fields.number("count")?.unwrap_or(1) as usize;
                    drivers_given = true;
                }
                "tasks" => {
                    let placement = match fields.take("strategy").as_deref() {
                        None | Some("default") | Some("hybrid") => Placement::Default,
                        Some("spread") => Placement::Spread,
                        Some(other) => match other.strip_prefix("group:") {
                            Some(group) => {
                                let (name, bundle) = match group.split_once(':') {
                                    Some((name, bundle)) => {
                                        let bundle = bundle.parse().map_err(|_| {
                                            error(format!("bundle index {bundle:?} is not a number"))
                                        })?;
                                        (name, Some(bundle))
                                    }
                                    None => (group, None),
                                };
                                Placement::Group { name: name.into(), bundle }
                            }
                            None => {
                                return Err(error(format!(
                                    "strategy {other:?}: expected default, spread or group:NAME[:BUNDLE]"
                                )))
                            }
                        },
                    };
                    let batch = TaskBatch {
                        count: fields.number("count")?.unwrap_or(1) as usize,
                        duration: fields.span("duration")?.unwrap_or(Span::at(100)),
                        arrival: fields.span("at")?.unwrap_or(Span::at(0)),
                        argument_bytes: fields.bytes("args")?.unwrap_or(0),
                        retries: fields.number("retries")?.unwrap_or(3) as u32,
                        function: fields.take("function").unwrap_or_else(|| format!("line{line}")),
                        resources: fields.resources()?,
                        placement,
                    };
                    workload.tasks.push(batch);
                }
                "group" => {
                    let name = fields.take("name").ok_or_else(|| error("a group needs name=".into()))?;
                    let strategy = match fields.take("strategy").as_deref().unwrap_or("pack") {
                        "pack" => PlacementStrategy::Pack,
                        "spread" => PlacementStrategy::Spread,
                        "strict_pack" => PlacementStrategy::StrictPack,
                        "strict_spread" => PlacementStrategy::StrictSpread,
                        other => {
                            return Err(error(format!(
                                "strategy {other:?}: expected pack, spread, strict_pack or strict_spread"
                            )))
                        }
                    };
                    let bundles =
                        fields.take("bundles").ok_or_else(|| error("a group needs bundles=".into()))?;
                    let group = GroupSpec {
                        name,
                        at: fields.number("at")?.unwrap_or(0),
                        strategy,
                        bundles: parse_bundles(&bundles).map_err(error)?,
                        remove_at: fields.number("remove")?,
                    };
                    workload.groups.push(group);
                }
                "actors" => {
                    let actors = ActorBatch {
                        count: fields.number("count")?.unwrap_or(1) as usize,
                        arrival: fields.span("at")?.unwrap_or(Span::at(0)),
                        lifetime: fields.number("lifetime")?.unwrap_or(10_000),
                        restarts: fields.number("restarts")?.unwrap_or(0) as u32,
                        resources: fields.resources()?,
                    };
                    workload.actors.push(actors);
                }
                "join" => {
                    let at = fields.number("at")?.unwrap_or(0);
                    workload.events.push(ClusterEvent::Join { at, kind: fields.node_kind()? });
                }
                "kill" | "partition" => {
                    let at = fields.number("at")?.unwrap_or(0);
                    let range = match (fields.take("node"), fields.take("nodes")) {
                        (Some(node), None) => {
                            let node =
                                node.parse().map_err(|_| error(format!("node {node:?} is not a number")))?;
                            (node, node)
                        }
                        (None, Some(nodes)) => {
                            let span = parse_span(&nodes).map_err(error)?;
                            (span.from as usize, span.to as usize)
                        }
                        _ => return Err(error(format!("{kind} needs node=N or nodes=A..B"))),
                    };
                    let event = if kind == "kill" {
                        ClusterEvent::Kill { at, from: range.0, to: range.1 }
                    } else {
                        let until = fields
                            .number("until")?
                            .ok_or_else(|| error("a partition needs until=".into()))?;
                        ClusterEvent::Partition { at, until, from: range.0, to: range.1 }
                    };
                    workload.events.push(event);
                }
                "network" => {
                    if let Some(latency) = fields.span("latency")? {
                        workload.network.latency = latency;
                    }
                    if let Some(loss) = fields.take("loss") {
                        workload.network.loss =
                            loss.parse::<f64>().ok().filter(|loss| (0.0..1.0).contains(loss)).ok_or_else(
                                || error(format!("loss {loss:?}: expected a fraction below 1")),
                            )?;
                    }
                    if let Some(bandwidth) = fields.bytes("bandwidth")? {
                        workload.network.bandwidth = bandwidth.max(1);
                    }
                    if let Some(retransmit) = fields.number("retransmit")? {
                        workload.network.retransmit_ms = retransmit;
                    }
                }
                "sync" => workload.sync_ms = fields.number("every")?.unwrap_or(100),
                "workers" => workload.worker_start_ms = fields.number("start")?.unwrap_or(50),
                other => {
                    return Err(error(format!(
                        "{other:?}: expected nodes, drivers, tasks, group, actors, join, kill, partition, \
                         network, sync or workers"
                    )))
                }
            }
            fields.finish()?;
        }
        if !drivers_given {
            workload.drivers = 1;
        }
        workload.validate()?;
        Ok(workload)
    }
}

fn amounts(resources: &[(&str, f64)]) -> Amounts {
    resources.iter().map(|(name, amount)| ((*name).to_owned(), *amount)).collect()
}

/// A resource's name as users write it in a description (`cpu`, `gpu`, `memory`, or custom).
fn resource_name(name: &str) -> String {
    match name {
        "cpu" => "CPU".into(),
        "gpu" => "GPU".into(),
        "memory" => "memory".into(),
        other => other.to_owned(),
    }
}

fn parse_span(text: &str) -> Result<Span, String> {
    let number =
        |part: &str| part.trim().parse::<u64>().map_err(|_| format!("{part:?} is not a number of ms"));
    match text.split_once("..") {
        Some((from, to)) => Ok(Span::between(number(from)?, number(to)?)),
        None => Ok(Span::at(number(text)?)),
    }
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    let upper = text.to_ascii_uppercase();
    let (digits, scale) = [("GB", 1_000_000_000u64), ("MB", 1_000_000), ("KB", 1_000), ("B", 1)]
        .iter()
        .find_map(|(suffix, scale)| upper.strip_suffix(suffix).map(|digits| (digits.to_owned(), *scale)))
        .unwrap_or((upper.clone(), 1));
    let value: f64 = digits.trim().parse().map_err(|_| format!("{text:?} is not a size (like 64MB)"))?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("{text:?} is not a size (like 64MB)"));
    }
    Ok((value * scale as f64) as u64)
}

/// `4*cpu:2/gpu:1,cpu:1`: bundles separated by commas, each optionally repeated (`N*`), its
/// resources separated by slashes.
fn parse_bundles(text: &str) -> Result<Vec<Amounts>, String> {
    let mut bundles = Vec::new();
    for part in text.split(',') {
        let (times, bundle) = match part.split_once('*') {
            Some((times, bundle)) => {
                (times.parse::<usize>().map_err(|_| format!("{times:?} is not a count of bundles"))?, bundle)
            }
            None => (1, part),
        };
        let mut resources = Vec::new();
        for item in bundle.split('/') {
            let (name, amount) = item
                .split_once(':')
                .ok_or_else(|| format!("bundle resource {item:?}: expected NAME:AMOUNT"))?;
            let amount: f64 =
                amount.parse().ok().filter(|amount: &f64| amount.is_finite() && *amount > 0.0).ok_or_else(
                    || format!("bundle resource {item:?}: the amount must be a positive number"),
                )?;
            resources.push((resource_name(name), amount));
        }
        if times > 10_000 {
            return Err(format!("{times} bundles in one group is more than 10,000"));
        }
        bundles.extend(std::iter::repeat_n(resources, times));
    }
    Ok(bundles)
}

/// A line's `key=value` fields; each is taken once, and one left over is an error.
struct Fields {
    line: usize,
    fields: Vec<(String, String)>,
}

impl Fields {
    fn new<'a>(words: impl Iterator<Item = &'a str>, line: usize) -> Result<Fields, WorkloadError> {
        let mut fields = Vec::new();
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| WorkloadError { line, message: format!("{word:?}: expected key=value") })?;
            fields.push((key.to_owned(), value.to_owned()));
        }
        Ok(Fields { line, fields })
    }

    fn error(&self, message: String) -> WorkloadError {
        WorkloadError { line: self.line, message }
    }

    fn take(&mut self, key: &str) -> Option<String> {
        let at = self.fields.iter().position(|(name, _)| name == key)?;
        Some(self.fields.remove(at).1)
    }

    fn number(&mut self, key: &str) -> Result<Option<u64>, WorkloadError> {
        match self.take(key) {
            None => Ok(None),
            Some(value) => {
                let digits = value.replace('_', "");
                digits
                    .parse()
                    .map(Some)
                    .map_err(|_| self.error(format!("{key}={value}: expected a whole number")))
            }
        }
    }

    fn span(&mut self, key: &str) -> Result<Option<Span>, WorkloadError> {
        match self.take(key) {
            None => Ok(None),
            Some(value) => {
                parse_span(&value).map(Some).map_err(|message| self.error(format!("{key}: {message}")))
            }
        }
    }

    fn bytes(&mut self, key: &str) -> Result<Option<u64>, WorkloadError> {
        match self.take(key) {
            None => Ok(None),
            Some(value) => {
                parse_bytes(&value).map(Some).map_err(|message| self.error(format!("{key}: {message}")))
            }
        }
    }

    /// `cpu=`, `gpu=`, `memory=` and `res.NAME=` fields.
    fn resources(&mut self) -> Result<Amounts, WorkloadError> {
        let mut resources = Vec::new();
        let keys: Vec<String> = self
            .fields
            .iter()
            .map(|(key, _)| key.clone())
            .filter(|key| matches!(key.as_str(), "cpu" | "gpu" | "memory") || key.starts_with("res."))
            .collect();
        for key in keys {
            let value = self.take(&key).unwrap_or_default();
            let amount: f64 = value
                .parse()
                .ok()
                .filter(|amount: &f64| amount.is_finite() && *amount >= 0.0)
                .ok_or_else(|| self.error(format!("{key}={value}: expected a non-negative number")))?;
            let name = key.strip_prefix("res.").map_or_else(|| resource_name(&key), str::to_owned);
            if amount > 0.0 {
                resources.push((name, amount));
            }
        }
        Ok(resources)
    }

    fn node_kind(&mut self) -> Result<NodeKind, WorkloadError> {
        let count = self.number("count")?.unwrap_or(1) as usize;
        let mut labels = Vec::new();
        if let Some(text) = self.take("labels") {
            for pair in text.split(',') {
                let (key, value) = pair
                    .split_once(':')
                    .ok_or_else(|| self.error(format!("label {pair:?}: expected KEY:VALUE")))?;
                labels.push((key.to_owned(), value.to_owned()));
            }
        }
        let resources = self.resources()?;
        if resources.is_empty() {
            return Err(self.error("nodes need resources (cpu=N, gpu=N, res.NAME=N)".into()));
        }
        Ok(NodeKind { count, resources, labels })
    }

    fn finish(self) -> Result<(), WorkloadError> {
        match self.fields.first() {
            None => Ok(()),
            Some((key, value)) => Err(self.error(format!("{key}={value}: not a field of this line"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_description_parses() {
        let text = include_str!("workload.rs")
            .lines()
            .skip_while(|line| !line.contains("```text"))
            .skip(1)
            .take_while(|line| !line.contains("```"))
            .map(|line| line.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let workload = Workload::parse(&text).unwrap();
        assert_eq!(workload.initial_nodes(), 1010);
        assert_eq!(workload.drivers, 20);
        assert_eq!(workload.task_count(), 105_400);
        assert_eq!(workload.tasks[1].argument_bytes, 64_000_000);
        assert_eq!(workload.tasks[1].placement, Placement::Spread);
        assert_eq!(workload.groups[0].bundles.len(), 4);
        assert_eq!(workload.groups[0].bundles[0], vec![("CPU".into(), 2.0), ("GPU".into(), 1.0)]);
        assert_eq!(workload.groups[0].strategy, PlacementStrategy::StrictSpread);
        assert_eq!(workload.tasks[2].placement, Placement::Group { name: "train".into(), bundle: None });
        assert_eq!(workload.events.len(), 3);
        assert_eq!(workload.network.latency, Span::between(1, 5));
        assert_eq!(workload.nodes[1].labels, vec![("zone".into(), "b".into())]);
    }

    #[test]
    fn bad_lines_are_typed_errors_naming_the_line() {
        let cases = [
            ("nodes count=2 cpu=4\nflying count=3", 2, "expected nodes"),
            ("nodes count=2 cpu=x", 1, "non-negative number"),
            ("nodes count=2", 1, "need resources"),
            ("nodes count=2 cpu=1\ntasks count=3 colour=red", 2, "not a field"),
            ("nodes count=2 cpu=1\ntasks strategy=group:nope", 0, "lacks"),
            ("nodes count=2 cpu=1\ngroup name=g bundles=cpu:1\ntasks strategy=group:g:3", 0, "out of range"),
            ("nodes count=2 cpu=1\nkill at=5 node=7", 0, "only 2 nodes"),
            ("nodes count=2 cpu=1\ngroup name=g bundles=cpu", 2, "NAME:AMOUNT"),
            ("nodes count=2 cpu=1\nnetwork loss=2", 2, "fraction"),
            ("nodes count=2 cpu=1\ntasks args=lots", 2, "size"),
            ("", 0, "no nodes"),
        ];
        for (text, line, needle) in cases {
            let error = Workload::parse(text).expect_err(text);
            assert_eq!(error.line, line, "{text}: {error}");
            assert!(error.to_string().contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn the_uniform_workload_has_what_the_cli_asks_for() {
        let workload = Workload::uniform(100, 8, 10_000, 10);
        assert_eq!(workload.initial_nodes(), 100);
        assert_eq!(workload.task_count(), 10_000);
        assert_eq!(workload.drivers, 10);
        workload.validate().unwrap();
    }
}
