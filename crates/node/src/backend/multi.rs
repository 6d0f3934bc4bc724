//! Several backends behind one: the node holds a single `Arc<dyn Backend>`, and a node that serves
//! chat with one engine and embeddings with another (llama.cpp and candle, or an upstream and
//! candle) hands it a [`MultiBackend`] of both.
//!
//! Each model name belongs to exactly one backend. An offer carries one backend id and one model
//! hash, paperwork records them, and the node checks a task against the offer found by name; a
//! name served by two backends would make all three ambiguous, so construction refuses it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;
use stacknet_protocol::wire::{ModelOffer, ModelReady};
use tokio::sync::mpsc;

use super::{Backend, BackendError, BackendOutcome, BackendTask};

/// Routes each task, by its model name and workload, to the backend that offers them; advertises
/// the union of every backend's models, in the order the backends were given.
#[derive(Clone)]
pub struct MultiBackend {
    backends: Vec<Arc<dyn Backend>>,
    offers: Vec<ModelOffer>,
    /// Model name to (index into `backends`, index into `offers`).
    routes: HashMap<String, (usize, usize)>,
}

impl MultiBackend {
    /// Combines `backends`. Their offers are read once, here: a backend's models must not change
    /// while it serves (none of ours do; the node advertises them once per connection anyway).
    /// Refuses an empty list and a model name offered by two backends.
    pub fn new(backends: Vec<Arc<dyn Backend>>) -> Result<Self, BackendError> {
        if backends.is_empty() {
            return Err(BackendError::Setup(
                "a MultiBackend needs at least one backend".to_owned(),
            ));
        }
        let mut offers: Vec<ModelOffer> = Vec::new();
        let mut routes: HashMap<String, (usize, usize)> = HashMap::new();
        for (b, backend) in backends.iter().enumerate() {
            for offer in backend.models() {
                if let Some(&(_, o)) = routes.get(&offer.name) {
                    let first: &ModelOffer = &offers[o];
                    return Err(BackendError::Setup(format!(
                        "model {:?} is offered by two backends ({} and {}); give each model one backend",
                        offer.name, first.backend, offer.backend
                    )));
                }
                routes.insert(offer.name.clone(), (b, offers.len()));
                offers.push(offer);
            }
        }
        Ok(Self {
            backends,
            offers,
            routes,
        })
    }

    /// The backend that serves `task`, or why none does.
    fn route(&self, task: &BackendTask) -> Result<&Arc<dyn Backend>, BackendError> {
        let unsupported = || BackendError::Unsupported {
            model: task.model.clone(),
            workload: task.workload,
        };
        let &(b, o) = self.routes.get(&task.model).ok_or_else(unsupported)?;
        if !self.offers[o].workloads.contains(&task.workload) {
            return Err(unsupported());
        }
        Ok(&self.backends[b])
    }
}

impl fmt::Debug for MultiBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The backends themselves are trait objects without Debug; their offers say what they are.
        f.debug_struct("MultiBackend")
            .field("backends", &self.backends.len())
            .field("offers", &self.offers)
            .finish()
    }
}

impl Backend for MultiBackend {
    fn models(&self) -> Vec<ModelOffer> {
        self.offers.clone()
    }

    fn ready(&self) -> Vec<ModelReady> {
        self.backends.iter().flat_map(|b| b.ready()).collect()
    }

    fn execute(
        &self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        match self.route(&task) {
            Ok(backend) => backend.execute(task, chunks),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use stacknet_protocol::contract::Workload;
    use stacknet_protocol::paperwork::BackendInfo;
    use stacknet_protocol::ContractId;

    use crate::backend::Cancellation;

    use super::*;

    /// Serves the named models for `workloads` and answers each task with its own id.
    struct Fixed {
        id: &'static str,
        models: Vec<&'static str>,
        workloads: Vec<Workload>,
    }

    impl Backend for Fixed {
        fn models(&self) -> Vec<ModelOffer> {
            self.models
                .iter()
                .map(|name| ModelOffer {
                    name: (*name).to_owned(),
                    workloads: self.workloads.clone(),
                    backend: self.id.to_owned(),
                    model_sha256: None,
                    tool: None,
                })
                .collect()
        }

        fn execute(
            &self,
            task: BackendTask,
            _chunks: mpsc::Sender<Value>,
        ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
            let info = BackendInfo {
                id: self.id.to_owned(),
                version: "1".to_owned(),
                model: task.model,
                model_sha256: None,
            };
            Box::pin(std::future::ready(Ok(BackendOutcome {
                usage: None,
                info,
                warm: true,
                files: Vec::new(),
                committed: None,
            })))
        }
    }

    fn fixed(id: &'static str, models: &[&'static str], workloads: &[Workload]) -> Arc<dyn Backend> {
        Arc::new(Fixed {
            id,
            models: models.to_vec(),
            workloads: workloads.to_vec(),
        })
    }

    fn task(model: &str, workload: Workload) -> BackendTask {
        BackendTask {
            contract: ContractId::random(),
            workload,
            model: model.to_owned(),
            request: Arc::new(json!({})),
            files: Arc::default(),
            cancel: Cancellation::never(),
        }
    }

    fn chat_and_embed() -> MultiBackend {
        MultiBackend::new(vec![
            fixed("llama.cpp", &["smol"], &[Workload::Chat, Workload::Completion]),
            fixed("candle", &["minilm"], &[Workload::Embedding]),
        ])
        .unwrap()
    }

    async fn served_by(
        multi: &MultiBackend,
        model: &str,
        workload: Workload,
    ) -> Result<String, BackendError> {
        let (tx, _rx) = mpsc::channel(1);
        multi.execute(task(model, workload), tx).await.map(|o| o.info.id)
    }

    #[tokio::test]
    async fn routes_by_model_and_workload() {
        let multi = chat_and_embed();
        let names: Vec<_> = multi.models().into_iter().map(|o| (o.name, o.backend)).collect();
        assert_eq!(
            names,
            [
                ("smol".into(), "llama.cpp".into()),
                ("minilm".into(), "candle".into())
            ]
        );
        assert_eq!(
            served_by(&multi, "smol", Workload::Completion).await.unwrap(),
            "llama.cpp"
        );
        assert_eq!(
            served_by(&multi, "minilm", Workload::Embedding).await.unwrap(),
            "candle"
        );
    }

    #[tokio::test]
    async fn refuses_unknown_models_and_workloads_a_model_does_not_serve() {
        let multi = chat_and_embed();
        for (model, workload) in [("minilm", Workload::Chat), ("gpt-4", Workload::Chat)] {
            assert_eq!(
                served_by(&multi, model, workload).await.unwrap_err(),
                BackendError::Unsupported {
                    model: model.to_owned(),
                    workload
                }
            );
        }
    }

    #[test]
    fn refuses_a_model_offered_twice_and_an_empty_list() {
        let err = MultiBackend::new(vec![
            fixed("openai-upstream", &["m"], &[Workload::Chat]),
            fixed("candle", &["m"], &[Workload::Embedding]),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "backend setup failed: model \"m\" is offered by two backends (openai-upstream and candle); \
             give each model one backend"
        );
        assert!(MultiBackend::new(Vec::new()).is_err());
    }
}
