//! `stacknet stack`: what a Stack manages with an owner API key, through the SDK: its injections
//! (system prompts and tools put into its chat requests), the skills it publishes, its referral
//! codes; and `stacknet skills`, the public registry.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use stacknet_api::types::{InjectionSpec, SkillSpec};
use stacknet_protocol::{InjectionId, SkillId};
use stacknet_sdk::Client;

#[derive(Args, Debug)]
pub struct StackArgs {
    /// The hub's URL.
    #[arg(long, env = "STACKNET_HUB", default_value = "http://127.0.0.1:8080")]
    pub hub: String,
    /// An owner API key of the Stack (sk_...).
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: String,
    #[command(subcommand)]
    pub command: StackCommand,
}

#[derive(Subcommand, Debug)]
pub enum StackCommand {
    /// System prompts and tools put into the Stack's chat requests.
    #[command(subcommand)]
    Injection(InjectionCommand),
    /// Skills the Stack publishes: any Stack may invoke them, and each use pays the royalty.
    #[command(subcommand)]
    Skill(SkillCommand),
    /// Referral codes: nodes and Stacks that sign up with one credit the Stack.
    #[command(subcommand)]
    Referral(ReferralCommand),
}

/// The fields of an injection.
#[derive(Args, Debug, Clone)]
pub struct InjectionFields {
    #[arg(long)]
    pub name: String,
    /// A system message put before the request's own.
    #[arg(long)]
    pub system: Option<String>,
    /// A JSON file with an array of tool definitions to add.
    #[arg(long)]
    pub tools: Option<PathBuf>,
    /// Only requests with this API key (its listed prefix, sk_...); repeat for several. Default: every key.
    #[arg(long = "key")]
    pub keys: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum InjectionCommand {
    Create(InjectionFields),
    /// Its next version (every field replaced).
    Update {
        id: InjectionId,
        #[command(flatten)]
        fields: InjectionFields,
    },
    List,
    /// One injection, at its latest version or at --version.
    Show {
        id: InjectionId,
        #[arg(long)]
        version: Option<u64>,
    },
    /// Turn it off (its versions stay, as proof of what shaped past requests).
    Delete {
        id: InjectionId,
    },
}

/// The fields of a skill.
#[derive(Args, Debug, Clone)]
pub struct SkillFields {
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value = "")]
    pub description: String,
    /// A system message put before the request's own when the skill is invoked.
    #[arg(long)]
    pub instructions: Option<String>,
    /// A JSON file with an array of tool definitions.
    #[arg(long)]
    pub tools: Option<PathBuf>,
    /// The model a request naming the skill as its model gets.
    #[arg(long)]
    pub model: Option<String>,
    /// The creator's royalty, in basis points of each task's cost (at most the network's skills share).
    #[arg(long, default_value = "0")]
    pub royalty_bps: u32,
    /// Only this Stack may invoke it.
    #[arg(long)]
    pub private: bool,
}

#[derive(Subcommand, Debug)]
pub enum SkillCommand {
    Publish(SkillFields),
    /// Its next version.
    Update {
        id: SkillId,
        #[command(flatten)]
        fields: SkillFields,
    },
    /// The public registry and this Stack's own skills.
    List,
    Show {
        id: SkillId,
    },
    /// No request may invoke it from now on; its royalties stay the Stack's.
    Unpublish {
        id: SkillId,
    },
    /// Move its royalties into the Stack's balance.
    Collect {
        id: SkillId,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReferralCommand {
    Create,
    /// The Stack's codes with the nodes and Stacks each brought.
    List,
}

fn tools(path: Option<&PathBuf>) -> Result<Vec<Value>> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a JSON array of tools", path.display()))
}

fn injection(f: &InjectionFields) -> Result<InjectionSpec> {
    Ok(InjectionSpec {
        name: f.name.clone(),
        system: f.system.clone(),
        tools: tools(f.tools.as_ref())?,
        keys: (!f.keys.is_empty()).then(|| f.keys.clone()),
        active: true,
    })
}

fn skill(f: &SkillFields) -> Result<SkillSpec> {
    Ok(SkillSpec {
        name: f.name.clone(),
        description: f.description.clone(),
        instructions: f.instructions.clone(),
        tools: tools(f.tools.as_ref())?,
        model: f.model.clone(),
        royalty_bps: f.royalty_bps,
        public: !f.private,
    })
}

fn print(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn run(args: StackArgs) -> Result<()> {
    let hub = Client::new(&args.hub)?.with_api_key(args.api_key);
    match args.command {
        StackCommand::Injection(c) => match c {
            InjectionCommand::Create(f) => print(&hub.create_injection(&injection(&f)?).await?),
            InjectionCommand::Update { id, fields } => {
                print(&hub.update_injection(id, &injection(&fields)?).await?)
            }
            InjectionCommand::List => print(&hub.injections().await?),
            InjectionCommand::Show { id, version } => print(&hub.injection(id, version).await?),
            InjectionCommand::Delete { id } => print(&hub.delete_injection(id).await?),
        },
        StackCommand::Skill(c) => match c {
            SkillCommand::Publish(f) => print(&hub.publish_skill(&skill(&f)?).await?),
            SkillCommand::Update { id, fields } => print(&hub.update_skill(id, &skill(&fields)?).await?),
            SkillCommand::List => print(&hub.skills().await?),
            SkillCommand::Show { id } => print(&hub.skill(id).await?),
            SkillCommand::Unpublish { id } => print(&hub.unpublish_skill(id).await?),
            SkillCommand::Collect { id } => print(&hub.collect_royalties(id).await?),
        },
        StackCommand::Referral(c) => match c {
            ReferralCommand::Create => print(&hub.create_referral().await?),
            ReferralCommand::List => print(&hub.referrals().await?),
        },
    }
}

/// `stacknet skills`: the public registry, without a key.
pub async fn registry(hub: &str) -> Result<()> {
    print(&Client::new(hub)?.skills().await?)
}
