//! `tether grant`, `revoke`, `create-account` and `disable-account`: one
//! write through the connector, printed as what changed. With `--dry-run`
//! the host holds every write back and prints it instead (reads still go
//! out, since the connector reads state to decide what to write).
//!
//! Before every write the host asks the connector what it would do
//! (`check-write`); one the upstream cannot undo is refused without `--yes`,
//! whichever connector and command it comes from.

use anyhow::{bail, Result};
use clap::Args;

use crate::cli::args::ConnectorArgs;
use crate::cli::start::prepare;
use crate::runtime::bindings::{guest, Pair, ResourceRef};
use crate::runtime::instance::{retry_rate_limited, ConnectorInstance, PlannedWrite};
use crate::terminal::{clip, escape as esc, MAX_CONNECTOR_TEXT};

#[derive(Args)]
pub struct GrantArgs {
    /// The entitlement to grant, e.g. team:1200000000000123:member.
    #[arg(long, value_name = "ID")]
    entitlement: String,
    /// Who gets it, e.g. user:1200000000000456.
    #[arg(long, value_name = "TYPE:ID", value_parser = parse_principal)]
    principal: ResourceRef,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(Args)]
pub struct RevokeArgs {
    /// The grant to revoke, as the sync file names it.
    #[arg(long, value_name = "ID")]
    grant: String,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(Args)]
pub struct CreateAccountArgs {
    /// The new account's email.
    #[arg(long, value_name = "E")]
    email: String,
    /// Its display name.
    #[arg(long, value_name = "N")]
    name: Option<String>,
    /// A field the connector declares for new accounts (repeatable);
    /// `tether describe` lists them (Asana: workspace, license).
    #[arg(long = "field", value_name = "KEY=VALUE", value_parser = crate::cli::args::parse_key_value)]
    fields: Vec<(String, String)>,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(Args)]
pub struct DisableAccountArgs {
    /// The user to deactivate, e.g. 1200000000000456 or user:1200000000000456.
    #[arg(long, value_name = "ID")]
    user: String,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(Args)]
pub struct WriteArgs {
    #[command(flatten)]
    connector: ConnectorArgs,
    /// Print the exact write requests instead of sending them.
    #[arg(long)]
    dry_run: bool,
    /// Confirm a write the upstream cannot undo (the connector says which;
    /// e.g. deactivating an Asana user). Without it such a write is refused.
    #[arg(long)]
    yes: bool,
}

fn parse_principal(text: &str) -> Result<ResourceRef, String> {
    match text.split_once(':') {
        Some((resource_type, id)) if !resource_type.is_empty() && !id.is_empty() => Ok(ResourceRef { resource_type: resource_type.into(), id: id.into() }),
        _ => Err(format!("expected TYPE:ID (e.g. user:123), got {text:?}")),
    }
}

pub async fn grant(args: GrantArgs) -> Result<()> {
    let mut instance = start(&args.write).await?;
    let planned = PlannedWrite::Grant { entitlement_id: args.entitlement.clone(), principal: args.principal.clone() };
    confirm(&mut instance, &args.write, &planned).await?;
    let result = retry_rate_limited!(instance, grant_entitlement(&args.entitlement, &args.principal));
    let result = result.map_err(|e| anyhow::anyhow!("grant of {} to {}:{} failed: {e}", args.entitlement, args.principal.resource_type, args.principal.id))?;
    report(&instance, &args.write, &result)?;
    Ok(())
}

pub async fn revoke(args: RevokeArgs) -> Result<()> {
    let mut instance = start(&args.write).await?;
    confirm(&mut instance, &args.write, &PlannedWrite::Revoke { grant_id: args.grant.clone() }).await?;
    let result = retry_rate_limited!(instance, revoke_grant(&args.grant));
    let result = result.map_err(|e| anyhow::anyhow!("revoke of {} failed: {e}", args.grant))?;
    report(&instance, &args.write, &result)?;
    Ok(())
}

pub async fn create_account(args: CreateAccountArgs) -> Result<()> {
    let mut instance = start(&args.write).await?;
    check_account_fields(&instance.metadata.account_fields, &args.fields)?;
    let options = args.fields.iter().map(|(name, value)| Pair { name: name.clone(), value: value.clone() }).collect();
    let request = guest::AccountRequest { email: args.email.clone(), display_name: args.name.clone(), options };
    confirm(&mut instance, &args.write, &PlannedWrite::CreateAccount(request.clone())).await?;
    let created = retry_rate_limited!(instance, create_account(&request));
    let created = created.map_err(|e| anyhow::anyhow!("creating an account for {} failed: {e}", args.email))?;
    if args.write.dry_run {
        print_held(&instance, created.outcome, &created.message)?;
        return Ok(());
    }
    let account = &created.account;
    let reference = format!("{}:{}", esc(&account.resource_type), esc(&account.id));
    match created.outcome {
        Some(guest::Outcome::Changed) => outln!("changed: created account {reference} for {}", args.email)?,
        Some(guest::Outcome::NoChange) => outln!("no change: an account for {} already exists ({reference})", args.email)?,
        // A connector built before 0.3.0 does not say which.
        None => outln!("done: account {reference} for {}", args.email)?,
    }
    if !created.message.is_empty() {
        outln!("  {}", esc(&clip(&created.message, MAX_CONNECTOR_TEXT)))?;
    }
    for pair in &account.attributes {
        outln!("  {} = {}", esc(&pair.name), esc(&pair.value))?;
    }
    Ok(())
}

/// `--field`s must be ones the connector declares, each once, and every
/// required one must be there.
fn check_account_fields(declared: &[guest::ConfigField], given: &[(String, String)]) -> Result<()> {
    let names = || declared.iter().map(|f| esc(&f.key).into_owned()).collect::<Vec<_>>().join(", ");
    for (i, (key, _)) in given.iter().enumerate() {
        if !declared.iter().any(|f| &f.key == key) {
            if declared.is_empty() {
                bail!("--field {key}: this connector takes no account fields");
            }
            bail!("--field {key}: not a field this connector takes (it takes: {})", names());
        }
        if given[..i].iter().any(|(earlier, _)| earlier == key) {
            bail!("--field {key} is given twice");
        }
    }
    if let Some(missing) = declared.iter().find(|f| f.required && !given.iter().any(|(key, _)| key == &f.key)) {
        bail!("the connector needs --field {}=…: {}", esc(&missing.key), esc(&missing.description));
    }
    Ok(())
}

pub async fn disable_account(args: DisableAccountArgs) -> Result<()> {
    let id = args.user.strip_prefix("user:").unwrap_or(&args.user).to_string();
    let account = ResourceRef { resource_type: "user".into(), id };
    let mut instance = start(&args.write).await?;
    confirm(&mut instance, &args.write, &PlannedWrite::DisableAccount(account.clone())).await?;
    let result = retry_rate_limited!(instance, disable_account(&account));
    let result = result.map_err(|e| anyhow::anyhow!("disabling user {} failed: {e}", account.id))?;
    report(&instance, &args.write, &result)?;
    Ok(())
}

/// Asks the connector what `write` would do; refuses one it cannot undo
/// unless the operator said --yes (a dry run shows it and goes on, since it
/// sends no write).
async fn confirm(instance: &mut ConnectorInstance, args: &WriteArgs, write: &PlannedWrite) -> Result<()> {
    let effect = retry_rate_limited!(instance, check_write(write)).map_err(|e| anyhow::anyhow!("the connector could not say what the write would do: {e}"))?;
    if !effect.irreversible {
        return Ok(());
    }
    let what = esc(&effect.description);
    if args.dry_run {
        outln!("dry run: irreversible: {what} (needs --yes)")?;
        return Ok(());
    }
    if !args.yes {
        bail!("refusing a write that cannot be undone without --yes: it {what}");
    }
    eprintln!("confirmed with --yes: {what}");
    Ok(())
}

async fn start(args: &WriteArgs) -> Result<ConnectorInstance> {
    let prepared = prepare(&args.connector, args.dry_run).await?;
    Ok(prepared.instance)
}

fn report(instance: &ConnectorInstance, args: &WriteArgs, result: &guest::WriteResult) -> Result<()> {
    if args.dry_run {
        return print_held(instance, Some(result.outcome), &result.message);
    }
    match result.outcome {
        guest::Outcome::Changed => outln!("changed: {}", esc(&clip(&result.message, MAX_CONNECTOR_TEXT)))?,
        guest::Outcome::NoChange => outln!("no change: {}", esc(&clip(&result.message, MAX_CONNECTOR_TEXT)))?,
    }
    if let Some(grant) = &result.grant {
        outln!("  grant {}", esc(&grant.id))?;
    }
    Ok(())
}

/// The writes a dry run held back. `outcome`: what the connector says the
/// write did (none from a connector before 0.3.0).
fn print_held(instance: &ConnectorInstance, outcome: Option<guest::Outcome>, message: &str) -> Result<()> {
    let held = instance.http().held_requests();
    match (held.is_empty(), outcome) {
        // Not "already in the requested state": the connector says otherwise.
        (true, Some(guest::Outcome::Changed)) => {
            outln!("dry run: nothing would be sent, though the connector reports a change: {}", esc(&clip(message, MAX_CONNECTOR_TEXT)))?
        }
        (true, _) => outln!("dry run: nothing would be sent (already in the requested state)")?,
        (false, _) => {}
    }
    for request in held {
        outln!("dry run: would send {} {}", request.method, esc(&request.url))?;
        if let Some(body) = request.body {
            outln!("  {}", esc(&clip(&body, MAX_CONNECTOR_TEXT)))?;
        }
    }
    Ok(())
}
