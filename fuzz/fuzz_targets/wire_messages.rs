//! Fuzzes the decoding of every wire message body and reply a process accepts from another
//! (GCS, raylet, worker, owner, store, actor manager, placement groups): the first byte picks the type, the rest
//! is the MessagePack body. Decoding must never panic, and whatever decodes must encode again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn check<T: Serialize + DeserializeOwned>(body: &[u8]) {
    if let Ok(value) = rmp_serde::from_slice::<T>(body) {
        rmp_serde::to_vec(&value).expect("a decoded message encodes again");
    }
}

fuzz_target!(|data: &[u8]| {
    use manta_gcs::requests as gcs;
    use manta_raylet::requests as raylet;
    use manta_worker::wire as worker;
    use manta_proto::placement;
    let Some((&which, body)) = data.split_first() else { return };
    match which % 63 {
        0 => check::<gcs::RegisterNode>(body),
        1 => check::<gcs::RegisterActor>(body),
        2 => check::<gcs::ActorStarted>(body),
        3 => check::<gcs::GetNamedActor>(body),
        4 => check::<gcs::KvPut>(body),
        5 => check::<gcs::Subscribe>(body),
        6 => check::<gcs::Published>(body),
        7 => check::<gcs::ReportWorker>(body),
        8 => check::<Result<Vec<manta_gcs::wire::ActorInfo>, manta_gcs::GcsError>>(body),
        9 => check::<raylet::RequestLease>(body),
        10 => check::<raylet::LeaseOutcome>(body),
        11 => check::<raylet::RegisterWorker>(body),
        12 => check::<raylet::WatchLease>(body),
        13 => check::<worker::PushTask>(body),
        14 => check::<Result<worker::TaskOutput, worker::TaskFailure>>(body),
        15 => check::<worker::GetObject>(body),
        16 => check::<worker::ObjectReply>(body),
        17 => check::<worker::AddBorrower>(body),
        18 => check::<worker::CreateStoreObject>(body),
        19 => check::<Result<worker::WireLocation, worker::StoreRefusal>>(body),
        20 => check::<worker::StartActor>(body),
        21 => check::<worker::ActorCall>(body),
        22 => check::<worker::CreateActor>(body),
        23 => check::<Result<(), worker::CreateActorError>>(body),
        24 => check::<worker::WatchActor>(body),
        25 => check::<Option<manta_gcs::wire::ActorInfo>>(body),
        26 => check::<worker::KillActor>(body),
        27 => check::<gcs::MarkNodeDead>(body),
        28 => check::<gcs::ReportWorkerExit>(body),
        29 => check::<raylet::ReturnLease>(body),
        30 => check::<raylet::WorkerBlocked>(body),
        31 => check::<worker::CancelTask>(body),
        32 => check::<worker::CancelObject>(body),
        33 => check::<worker::FreeObject>(body),
        34 => check::<worker::StreamItem>(body),
        35 => check::<gcs::AddJob>(body),
        36 => check::<gcs::GetJob>(body),
        37 => check::<Result<Option<manta_gcs::wire::JobInfo>, manta_gcs::GcsError>>(body),
        38 => check::<gcs::IssueJoinTokens>(body),
        39 => check::<Result<Vec<String>, manta_gcs::GcsError>>(body),
        40 => check::<raylet::HealthCheck>(body),
        41 => check::<Result<Vec<manta_gcs::wire::NodeInfo>, manta_gcs::GcsError>>(body),
        42 => check::<worker::ActorSpec>(body),
        43 => check::<worker::WorkerOutput>(body),
        44 => check::<worker::PullObject>(body),
        45 => check::<Result<worker::WireLocation, worker::PullError>>(body),
        46 => check::<worker::SendObject>(body),
        47 => check::<worker::ObjectTransfer>(body),
        48 => check::<worker::AddObjectCopy>(body),
        49 => check::<Result<Vec<manta_gcs::wire::NodeLoad>, manta_gcs::GcsError>>(body),
        50 => check::<worker::StoreFigures>(body),
        51 => check::<worker::SendBinary>(body),
        52 => check::<worker::BinaryTransfer>(body),
        53 => check::<gcs::AddJob>(body),
        54 => check::<placement::CreatePlacementGroup>(body),
        55 => check::<placement::PrepareBundles>(body),
        56 => check::<placement::CommitBundles>(body),
        57 => check::<placement::CancelBundles>(body),
        58 => check::<Option<placement::PlacementGroupInfo>>(body),
        59 => check::<Vec<placement::PlacementGroupInfo>>(body),
        60 => check::<Result<(), placement::PlacementGroupError>>(body),
        61 => check::<gcs::ReportResources>(body),
        _ => check::<worker::RemoveBorrower>(body),
    }
});
