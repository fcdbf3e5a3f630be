//! troupe-kv: a durable coordination service on troupe groups.

/// The etcd v3 protocol, generated from `proto/`.
pub mod pb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    /// mvccpb: keys, values and watch events.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// etcdserverpb: the KV, Watch, Lease, Cluster and Maintenance services.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    /// v3lockpb: the Lock service.
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
    /// v3electionpb: the Election service.
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
}
