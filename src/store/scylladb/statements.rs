//! Every prepared statement, built once at start-up with every key bound
//! as `?`.

use scylla::client::session::Session;
use scylla::errors::ExecutionError;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;

use super::rows::DISPATCH_COLUMNS;
use super::*;

/// Every prepared statement, built once at start-up.
pub(super) struct Statements {
    pub(super) ping: PreparedStatement,
    pub(super) put_campaign: PreparedStatement,
    pub(super) get_campaign: PreparedStatement,
    pub(super) list_campaigns: PreparedStatement,
    pub(super) set_observed: PreparedStatement,
    pub(super) set_started: PreparedStatement,
    pub(super) delete_campaign: PreparedStatement,
    pub(super) get_halt: PreparedStatement,
    pub(super) park_reply: PreparedStatement,
    pub(super) get_parked_reply: PreparedStatement,
    pub(super) parked_replies: PreparedStatement,
    pub(super) take_parked_reply: PreparedStatement,
    pub(super) put_halt: PreparedStatement,
    pub(super) delete_halt: PreparedStatement,
    pub(super) campaign_shards: PreparedStatement,
    pub(super) add_shard: PreparedStatement,
    pub(super) delete_shards: PreparedStatement,
    pub(super) stage: PreparedStatement,
    pub(super) stage_exists: PreparedStatement,
    pub(super) get_dispatch: PreparedStatement,
    pub(super) get_dispatch_serial: PreparedStatement,
    pub(super) scan_bucket: PreparedStatement,
    pub(super) scan_bucket_after: PreparedStatement,
    pub(super) delete_bucket: PreparedStatement,
    pub(super) journey: PreparedStatement,
    pub(super) add_pending: PreparedStatement,
    pub(super) remove_pending: PreparedStatement,
    pub(super) scan_pending: PreparedStatement,
    pub(super) scan_pending_after: PreparedStatement,
    pub(super) delete_pending: PreparedStatement,
    pub(super) load_cursor: PreparedStatement,
    pub(super) save_cursor: PreparedStatement,
    pub(super) delete_cursor: PreparedStatement,
    pub(super) put_timer: PreparedStatement,
    pub(super) due_timers: PreparedStatement,
    pub(super) delete_timer: PreparedStatement,
    pub(super) get_contact: PreparedStatement,
    pub(super) engage: PreparedStatement,
    pub(super) set_opt_out: PreparedStatement,
    pub(super) set_marketing_opt_out: PreparedStatement,
    pub(super) set_last_campaign: PreparedStatement,
    pub(super) set_undeliverable: PreparedStatement,
    pub(super) set_linked: PreparedStatement,
    pub(super) put_wamid: PreparedStatement,
    pub(super) get_wamid: PreparedStatement,
    pub(super) park: PreparedStatement,
    pub(super) parked: PreparedStatement,
    pub(super) unpark: PreparedStatement,
    pub(super) add_claim: PreparedStatement,
    pub(super) drop_claim: PreparedStatement,
    pub(super) list_claims: PreparedStatement,
    pub(super) put_lease: PreparedStatement,
    pub(super) drop_lease: PreparedStatement,
    pub(super) list_leases: PreparedStatement,
    pub(super) get_marker: PreparedStatement,
    pub(super) put_marker: PreparedStatement,
    pub(super) list_learned: PreparedStatement,
    pub(super) put_learned: PreparedStatement,
    pub(super) drop_learned: PreparedStatement,
    pub(super) get_recipient: PreparedStatement,
    pub(super) put_recipient: PreparedStatement,
    pub(super) get_portfolio_cursor: PreparedStatement,
    pub(super) put_portfolio_cursor: PreparedStatement,
    pub(super) get_slot: PreparedStatement,
    pub(super) take_slot: PreparedStatement,
    pub(super) first_slot: PreparedStatement,
    pub(super) send_slots: PreparedStatement,
    pub(super) take_send_slot: PreparedStatement,
    pub(super) first_send_slot: PreparedStatement,
    pub(super) put_reach: PreparedStatement,
    pub(super) get_reach: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(s: &Session) -> Result<Statements, ExecutionError> {
        async fn p(
            s: &Session,
            cql: &str,
            idempotent: bool,
        ) -> Result<PreparedStatement, ExecutionError> {
            let mut st = s.prepare(cql).await.map_err(ExecutionError::from)?;
            st.set_is_idempotent(idempotent);
            Ok(st)
        }
        let select_dispatch =
            format!("SELECT {DISPATCH_COLUMNS} FROM dispatches WHERE campaign_id = ? AND bucket = ? AND contact = ?");
        let mut get_dispatch_serial = p(s, &select_dispatch, true).await?;
        get_dispatch_serial.set_consistency(Consistency::LocalSerial);
        Ok(Statements {
            ping: p(s, "SELECT id FROM campaigns WHERE id = ?", true).await?,
            put_campaign: p(
                s,
                "UPDATE campaigns SET spec = ?, observed_state = ?, updated_at = ?, started_at = ? WHERE id = ?",
                true,
            )
            .await?,
            get_campaign: p(
                s,
                "SELECT id, spec, observed_state, updated_at, started_at FROM campaigns WHERE id = ?",
                true,
            )
            .await?,
            list_campaigns: p(
                s,
                "SELECT id, spec, observed_state, updated_at, started_at FROM campaigns",
                true,
            )
            .await?,
            set_observed: p(
                s,
                "UPDATE campaigns SET observed_state = ?, updated_at = ? WHERE id = ?",
                true,
            )
            .await?,
            set_started: p(s, "UPDATE campaigns SET started_at = ? WHERE id = ?", true).await?,
            delete_campaign: p(s, "DELETE FROM campaigns WHERE id = ?", true).await?,
            get_halt: p(s, "SELECT halt FROM campaign_halts WHERE id = ?", true).await?,
            park_reply: p(s, "INSERT INTO parked_replies (bucket, message_id, reply) VALUES (?, ?, ?)", true).await?,
            get_parked_reply: p(s, "SELECT reply FROM parked_replies WHERE bucket = ? AND message_id = ?", true).await?,
            parked_replies: p(s, "SELECT reply FROM parked_replies WHERE bucket = ?", true).await?,
            take_parked_reply: p(s, "DELETE FROM parked_replies WHERE bucket = ? AND message_id = ? IF EXISTS", false).await?,
            put_halt: p(s, "INSERT INTO campaign_halts (id, halt) VALUES (?, ?)", true).await?,
            delete_halt: p(s, "DELETE FROM campaign_halts WHERE id = ?", true).await?,
            campaign_shards: p(s, "SELECT shard FROM campaign_shards WHERE campaign_id = ?", true).await?,
            add_shard: p(s, "INSERT INTO campaign_shards (campaign_id, shard) VALUES (?, ?)", true).await?,
            delete_shards: p(s, "DELETE FROM campaign_shards WHERE campaign_id = ?", true).await?,
            stage: p(
                s,
                "INSERT INTO dispatches (campaign_id, bucket, contact, shard, seq, params, tags, timezone, send_after, staged_at, stage_exclusion, staged_journey, name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                true,
            )
            .await?,
            stage_exists: p(
                s,
                "SELECT staged_at, state, stage_exclusion, shard, seq FROM dispatches WHERE campaign_id = ? AND bucket = ? AND contact = ?",
                true,
            )
            .await?,
            get_dispatch: p(s, &select_dispatch, true).await?,
            get_dispatch_serial,
            scan_bucket: p(
                s,
                &format!("SELECT {DISPATCH_COLUMNS} FROM dispatches WHERE campaign_id = ? AND bucket = ?"),
                true,
            )
            .await?,
            scan_bucket_after: p(
                s,
                &format!("SELECT {DISPATCH_COLUMNS} FROM dispatches WHERE campaign_id = ? AND bucket = ? AND contact > ?"),
                true,
            )
            .await?,
            delete_bucket: p(s, "DELETE FROM dispatches WHERE campaign_id = ? AND bucket = ?", true).await?,
            journey: p(s, rows::JOURNEY_UPDATE, false).await?,
            add_pending: p(
                s,
                "INSERT INTO pending (campaign_id, shard, seq, contact) VALUES (?, ?, ?, ?)",
                true,
            )
            .await?,
            remove_pending: p(
                s,
                "DELETE FROM pending WHERE campaign_id = ? AND shard = ? AND seq = ?",
                true,
            )
            .await?,
            scan_pending: p(
                s,
                "SELECT seq, contact FROM pending WHERE campaign_id = ? AND shard = ?",
                true,
            )
            .await?,
            scan_pending_after: p(
                s,
                "SELECT seq, contact FROM pending WHERE campaign_id = ? AND shard = ? AND seq > ?",
                true,
            )
            .await?,
            delete_pending: p(s, "DELETE FROM pending WHERE campaign_id = ? AND shard = ?", true).await?,
            load_cursor: p(s, "SELECT seq FROM cursors WHERE campaign_id = ? AND shard = ?", true).await?,
            save_cursor: p(
                s,
                "UPDATE cursors SET seq = ? WHERE campaign_id = ? AND shard = ?",
                true,
            )
            .await?,
            delete_cursor: p(s, "DELETE FROM cursors WHERE campaign_id = ? AND shard = ?", true).await?,
            put_timer: p(
                s,
                "INSERT INTO timers (campaign_id, shard, due_at, contact, step) VALUES (?, ?, ?, ?, ?) USING TTL ?",
                true,
            )
            .await?,
            due_timers: p(
                s,
                "SELECT due_at, contact, step FROM timers WHERE campaign_id = ? AND shard = ? AND due_at <= ?",
                true,
            )
            .await?,
            delete_timer: p(
                s,
                "DELETE FROM timers WHERE campaign_id = ? AND shard = ? AND due_at = ? AND contact = ? AND step = ?",
                true,
            )
            .await?,
            get_contact: p(
                s,
                "SELECT engaged_campaign, opted_out, opted_out_at, last_campaign, undeliverable_at, marketing_opted_out, marketing_opt_changed_at, last_occurrence, linked FROM contacts WHERE contact = ?",
                true,
            )
            .await?,
            engage: p(
                s,
                "UPDATE contacts SET engaged_campaign = ? WHERE contact = ? IF engaged_campaign = ?",
                false,
            )
            .await?,
            set_opt_out: p(
                s,
                "UPDATE contacts SET opted_out = ?, opted_out_at = ? WHERE contact = ?",
                true,
            )
            .await?,
            set_marketing_opt_out: p(
                s,
                "UPDATE contacts SET marketing_opted_out = ?, marketing_opt_changed_at = ? WHERE contact = ?",
                true,
            )
            .await?,
            set_last_campaign: p(s, "UPDATE contacts SET last_campaign = ?, last_occurrence = ? WHERE contact = ?", true).await?,
            set_undeliverable: p(
                s,
                "UPDATE contacts SET undeliverable_at = ? WHERE contact = ?",
                true,
            )
            .await?,
            set_linked: p(
                s,
                "UPDATE contacts SET linked = ? WHERE contact = ?",
                true,
            )
            .await?,
            put_wamid: p(
                s,
                "INSERT INTO wamids (wamid, campaign_id, contact, created_at) VALUES (?, ?, ?, ?)",
                true,
            )
            .await?,
            get_wamid: p(
                s,
                "SELECT campaign_id, contact, created_at FROM wamids WHERE wamid = ?",
                true,
            )
            .await?,
            park: p(
                s,
                "INSERT INTO parked_statuses (wamid, status_id, status) VALUES (?, ?, ?)",
                true,
            )
            .await?,
            parked: p(s, "SELECT status FROM parked_statuses WHERE wamid = ?", true).await?,
            unpark: p(s, "DELETE FROM parked_statuses WHERE wamid = ?", true).await?,
            add_claim: p(
                s,
                "INSERT INTO claims (campaign_id, shard, owner, contact, claimed_at) VALUES (?, ?, ?, ?, ?)",
                true,
            )
            .await?,
            drop_claim: p(
                s,
                "DELETE FROM claims WHERE campaign_id = ? AND shard = ? AND owner = ? AND contact = ?",
                true,
            )
            .await?,
            list_claims: p(
                s,
                "SELECT owner, contact, claimed_at FROM claims WHERE campaign_id = ? AND shard = ?",
                true,
            )
            .await?,
            put_lease: p(s, "INSERT INTO leases (bucket, owner, until) VALUES (?, ?, ?)", true).await?,
            drop_lease: p(s, "DELETE FROM leases WHERE bucket = ? AND owner = ?", true).await?,
            list_leases: p(s, "SELECT owner, until FROM leases WHERE bucket = ?", true).await?,
            get_marker: p(s, "SELECT name FROM markers WHERE name = ?", true).await?,
            put_marker: p(s, "INSERT INTO markers (name, at) VALUES (?, ?)", true).await?,
            list_learned: p(s, "SELECT key, value FROM learned WHERE kind = ?", true).await?,
            put_learned: p(
                s,
                "INSERT INTO learned (kind, key, value, at) VALUES (?, ?, ?, ?)",
                true,
            )
            .await?,
            drop_learned: p(s, "DELETE FROM learned WHERE kind = ? AND key = ?", true).await?,
            get_recipient: p(s, "SELECT until FROM portfolio_recipients WHERE contact = ?", true).await?,
            put_recipient: p(s, "INSERT INTO portfolio_recipients (contact, until) VALUES (?, ?)", true).await?,
            get_portfolio_cursor: p(s, "SELECT next FROM portfolio_cursor WHERE id = ?", true).await?,
            put_portfolio_cursor: p(s, "UPDATE portfolio_cursor SET next = ? WHERE id = ?", true).await?,
            get_slot: p(s, "SELECT until FROM portfolio_slots WHERE slot = ?", true).await?,
            take_slot: p(
                s,
                "UPDATE portfolio_slots SET contact = ?, until = ? WHERE slot = ? IF until < ?",
                false,
            )
            .await?,
            first_slot: p(
                s,
                "INSERT INTO portfolio_slots (slot, contact, until) VALUES (?, ?, ?) IF NOT EXISTS",
                false,
            )
            .await?,
            send_slots: p(s, "SELECT slot, send, until FROM send_slots WHERE contact = ? AND scope = ?", true).await?,
            take_send_slot: p(
                s,
                "UPDATE send_slots SET send = ?, until = ? WHERE contact = ? AND scope = ? AND slot = ? IF until = ?",
                false,
            )
            .await?,
            first_send_slot: p(
                s,
                "INSERT INTO send_slots (contact, scope, slot, send, until) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS",
                false,
            )
            .await?,
            put_reach: p(
                s,
                "INSERT INTO contact_reach (contact, campaign_id, occurrence, at) VALUES (?, ?, ?, ?)",
                true,
            )
            .await?,
            get_reach: p(
                s,
                "SELECT campaign_id, occurrence, at FROM contact_reach WHERE contact = ?",
                true,
            )
            .await?,
        })
    }
}
