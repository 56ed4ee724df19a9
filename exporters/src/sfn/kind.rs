//! A task kind's Step Functions face: what the export asks of each kind,
//! and how it finds it in the registry.
//!
//! A kind implements [`StepFunctions`] in its own folder, beside its
//! typed config and local backend: the `[aws]` settings it reads, its
//! task as states with the IAM grants they need ([`TaskExport`]), where
//! its output is in production, and what it adds to the CloudFormation
//! template ([`Deployment`]). [`register`] puts a kind in a registry with
//! this face; the exporter only ever sees [`StepFunctionsFace`].

use std::any::Any;
use std::sync::Arc;

use engine::{Kind, Registry};

use super::cfn::Deployment;
use super::settings::{AwsSettings, KindSettings};
use super::task::{ProductionOutput, TaskContext, TaskExport};

/// A kind's settings, as its face reads them.
pub type AnySettings = dyn Any + Send + Sync;

/// How a kind exports to Step Functions.
pub trait StepFunctions: Kind {
    /// What the kind reads from `[aws]` (`()` for nothing).
    type Settings: KindSettings;

    /// The task's config for the translation: its fields as the export
    /// substituted them (parameters as markers when the state machine
    /// reads them from its input), which must then parse. A kind whose
    /// states carry its fields through unread (the report's payload, which
    /// the function checks when it runs) takes them with the parameters'
    /// values instead ([`TaskContext::config_with_values`]).
    fn config(task: &TaskContext) -> Result<Self::Config, String> {
        task.config()
    }

    /// Why a task of this kind can never be exported, whatever its
    /// fields; `None` when it can.
    fn not_exportable(&self, task_id: &str) -> Option<String> {
        let _ = task_id;
        None
    }

    /// The task as states, with the grants they need.
    fn translate(
        &self,
        task: &TaskContext,
        config: &Self::Config,
        settings: &Self::Settings,
    ) -> Result<TaskExport, String>;

    /// Where the task's output is in production, for the tasks that read
    /// it there (the report); `None` when nothing reads it.
    fn production_output(&self, config: &Self::Config) -> Option<ProductionOutput> {
        let _ = config;
        None
    }

    /// What the engine's own credentials need to run the task on AWS
    /// (`flux-engine run --target aws`): a different principal from the
    /// state machine's role, which `translate` grants to. Every grant is
    /// made for [`super::iam::Role::StateMachine`] and read as the
    /// engine's: `export --iam --for-run` writes them as one policy.
    fn run_grants(
        &self,
        task: &TaskContext,
        config: &Self::Config,
        settings: &Self::Settings,
    ) -> Vec<super::iam::Grant> {
        let _ = (task, config, settings);
        Vec::new()
    }

    /// What the template gets for the DAG's tasks of this kind (given in
    /// DAG order, perhaps none), beside the state machine.
    fn deployment(
        &self,
        settings: &Self::Settings,
        tasks: &[(&TaskContext, Self::Config)],
    ) -> Result<Deployment, String> {
        let _ = (settings, tasks);
        Ok(Deployment::default())
    }
}

/// A kind's Step Functions face as the exporter uses it: [`StepFunctions`]
/// with the config and settings types erased.
pub trait StepFunctionsFace: Send + Sync {
    fn known_settings(&self) -> &'static [&'static str];

    fn read_settings(&self, aws: &mut AwsSettings, first: Option<&str>)
    -> Option<Box<AnySettings>>;

    fn not_exportable(&self, task_id: &str) -> Option<String>;

    fn translate(&self, task: &TaskContext, settings: &AnySettings) -> Result<TaskExport, String>;

    fn production_output(&self, task: &TaskContext) -> Result<Option<ProductionOutput>, String>;

    fn run_grants(
        &self,
        task: &TaskContext,
        settings: &AnySettings,
    ) -> Result<Vec<super::iam::Grant>, String>;

    fn deployment(
        &self,
        settings: &AnySettings,
        tasks: &[&TaskContext],
    ) -> Result<Deployment, String>;
}

impl<K: StepFunctions> StepFunctionsFace for K {
    fn known_settings(&self) -> &'static [&'static str] {
        K::Settings::KEYS
    }

    fn read_settings(
        &self,
        aws: &mut AwsSettings,
        first: Option<&str>,
    ) -> Option<Box<AnySettings>> {
        K::Settings::read(aws, first).map(|s| Box::new(s) as Box<AnySettings>)
    }

    fn not_exportable(&self, task_id: &str) -> Option<String> {
        StepFunctions::not_exportable(self, task_id)
    }

    fn translate(&self, task: &TaskContext, settings: &AnySettings) -> Result<TaskExport, String> {
        let config = K::config(task)?;
        StepFunctions::translate(self, task, &config, typed::<K>(settings)?)
    }

    fn production_output(&self, task: &TaskContext) -> Result<Option<ProductionOutput>, String> {
        let config = K::config(task)?;
        Ok(StepFunctions::production_output(self, &config))
    }

    fn run_grants(
        &self,
        task: &TaskContext,
        settings: &AnySettings,
    ) -> Result<Vec<super::iam::Grant>, String> {
        let config = K::config(task)?;
        Ok(StepFunctions::run_grants(
            self,
            task,
            &config,
            typed::<K>(settings)?,
        ))
    }

    fn deployment(
        &self,
        settings: &AnySettings,
        tasks: &[&TaskContext],
    ) -> Result<Deployment, String> {
        let configs = tasks
            .iter()
            .map(|task| K::config(task).map(|config| (*task, config)))
            .collect::<Result<Vec<_>, _>>()?;
        StepFunctions::deployment(self, typed::<K>(settings)?, &configs)
    }
}

fn typed<K: StepFunctions>(settings: &AnySettings) -> Result<&K::Settings, String> {
    settings.downcast_ref::<K::Settings>().ok_or_else(|| {
        format!(
            "the settings of the task kind `{}` are not of its own type",
            K::NAME
        )
    })
}

/// Registers `kind` with the engine and with its Step Functions face: the
/// one registration an exportable kind needs.
pub fn register<K: StepFunctions>(registry: &mut Registry, kind: K) -> &mut Registry {
    let kind = Arc::new(kind);
    registry.register(kind.clone());
    registry.add_face::<dyn StepFunctionsFace>(K::NAME, kind)
}

/// The Step Functions face of the kind `name`, if it has one.
pub fn face<'r>(registry: &'r Registry, name: &str) -> Option<&'r Arc<dyn StepFunctionsFace>> {
    registry.face::<dyn StepFunctionsFace>(name)
}
