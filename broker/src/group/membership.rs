//! Membership: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, and the timers
//! (`tick`: session, rebalance and sync timeouts, the initial rebalance
//! delay). Each change is written to `__consumer_offsets` before it is
//! answered (`persist_group`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::state::*;
use super::wire::*;
use super::GroupCoordinator;
use crate::errors::KafkaResult;

impl GroupCoordinator {
    pub fn join(&self, request: JoinRequest, now: Instant, now_ms: i64) -> Reply<JoinResponse> {
        let config = &self.config;
        let fail = |error| Reply::Now(JoinResponse::error(error, &request.member_id));
        if request.group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId);
        }
        if request.session_timeout_ms < config.min_session_timeout_ms
            || request.session_timeout_ms > config.max_session_timeout_ms
        {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        let mut groups = self.lock();
        if self.closed.load(Ordering::Relaxed) {
            return fail(ResponseError::NotCoordinator);
        }
        if let Err(error) = self.check_coordinates(&request.group_id) {
            return fail(error);
        }
        if !groups.contains_key(&request.group_id) {
            if !request.member_id.is_empty() {
                return fail(ResponseError::UnknownMemberId);
            }
            groups.insert(
                request.group_id.clone(),
                Group::new(&request.group_id, now_ms),
            );
        }
        let group = groups.get_mut(&request.group_id).expect("inserted above");
        if group.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if !group.supports(&request.protocol_type, &request.protocols) {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        if group.fenced(request.group_instance_id.as_deref(), &request.member_id)
            && !request.member_id.is_empty()
        {
            return fail(ResponseError::FencedInstanceId);
        }

        let reply = if request.member_id.is_empty() {
            self.join_unknown_member(group, request, now, now_ms)
        } else if group.pending.remove(&request.member_id).is_some() {
            let member_id = request.member_id.clone();
            self.add_member(group, member_id, request, now, now_ms)
        } else if group.members.contains_key(&request.member_id) {
            self.join_known_member(group, request, now, now_ms)
        } else {
            fail(ResponseError::UnknownMemberId)
        };
        self.try_complete_join(group, now, now_ms);
        reply
    }

    pub(super) fn join_unknown_member(
        &self,
        group: &mut Group,
        request: JoinRequest,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinResponse> {
        let prefix = match &request.group_instance_id {
            Some(instance) => instance.as_str(),
            None => request.client_id.as_str(),
        };
        let prefix: String = prefix.chars().take(MEMBER_ID_CLIENT_PREFIX_MAX).collect();
        let new_id = format!("{prefix}-{}", Uuid::new_v4());

        if let Some(instance) = request.group_instance_id.clone() {
            if let Some(old_id) = group.static_members.get(&instance).cloned() {
                return self.replace_static_member(group, old_id, new_id, request, now, now_ms);
            }
        } else if request.require_known_member_id {
            if group.members.len() + group.pending.len() >= self.config.max_size {
                return Reply::Now(JoinResponse::error(ResponseError::GroupMaxSizeReached, ""));
            }
            group
                .pending
                .insert(new_id.clone(), now + millis(request.session_timeout_ms));
            return Reply::Now(JoinResponse::error(
                ResponseError::MemberIdRequired,
                &new_id,
            ));
        }
        self.add_member(group, new_id, request, now, now_ms)
    }

    pub(super) fn add_member(
        &self,
        group: &mut Group,
        member_id: String,
        request: JoinRequest,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinResponse> {
        if group.members.len() >= self.config.max_size {
            return Reply::Now(JoinResponse::error(
                ResponseError::GroupMaxSizeReached,
                &member_id,
            ));
        }
        let (sender, receiver) = oneshot::channel();
        if group.members.is_empty() {
            group.protocol_type = Some(request.protocol_type.clone());
        }
        if let Some(instance) = &request.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), member_id.clone());
        }
        let seq = group.next_join_seq;
        group.next_join_seq += 1;
        group.members.insert(
            member_id.clone(),
            Member {
                id: member_id,
                instance_id: request.group_instance_id,
                client_id: request.client_id,
                client_host: request.client_host,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                session_timeout_ms: request.session_timeout_ms,
                protocols: request.protocols,
                assignment: Bytes::new(),
                joined_seq: seq,
                session_deadline: now + millis(request.session_timeout_ms),
                join_waiter: Some(sender),
                sync_waiter: None,
            },
        );
        if group.state == GroupState::PreparingRebalance {
            // New members arriving during the initial delay push it back,
            // up to the rebalance timeout.
            if let (Some(_), Some(deadline)) = (group.initial_delay_until, group.rebalance_deadline)
            {
                let delay = Duration::from_millis(self.config.initial_rebalance_delay_ms);
                group.initial_delay_until = Some((now + delay).min(deadline));
            }
        } else {
            group.rebalance_or_check(&self.config, now, now_ms, "a member joined");
        }
        Reply::Later(receiver)
    }

    pub(super) fn join_known_member(
        &self,
        group: &mut Group,
        request: JoinRequest,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinResponse> {
        let is_leader = group.leader.as_deref() == Some(request.member_id.as_str());
        let member = group
            .members
            .get_mut(&request.member_id)
            .expect("checked by the caller");
        let unchanged = member.protocols == request.protocols;
        member.protocols = request.protocols;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.session_timeout_ms = request.session_timeout_ms;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.heartbeat(now);
        let (sender, receiver) = oneshot::channel();
        match group.state {
            GroupState::PreparingRebalance => {
                member.fail_waiters(ResponseError::RebalanceInProgress);
                member.join_waiter = Some(sender);
                Reply::Later(receiver)
            }
            GroupState::CompletingRebalance if unchanged => {
                // The member lost our JoinGroup answer: send it again.
                let member = &group.members[&request.member_id];
                Reply::Now(group.response_for(member, is_leader))
            }
            GroupState::Stable if unchanged && !is_leader => {
                let member = &group.members[&request.member_id];
                Reply::Now(group.response_for(member, false))
            }
            _ => {
                member.fail_waiters(ResponseError::RebalanceInProgress);
                member.join_waiter = Some(sender);
                group.prepare_rebalance(&self.config, now, now_ms, "a member rejoined");
                Reply::Later(receiver)
            }
        }
    }

    /// A static member came back with no member id (a restart): it takes
    /// over its old membership; the old id is fenced.
    pub(super) fn replace_static_member(
        &self,
        group: &mut Group,
        old_id: String,
        new_id: String,
        request: JoinRequest,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinResponse> {
        let Some(mut member) = group.members.remove(&old_id) else {
            group
                .static_members
                .remove(request.group_instance_id.as_deref().unwrap_or(""));
            return self.add_member(group, new_id, request, now, now_ms);
        };
        member.fail_waiters(ResponseError::FencedInstanceId);
        let old_protocols = std::mem::replace(&mut member.protocols, request.protocols);
        member.id = new_id.clone();
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.heartbeat(now);
        let was_leader = group.leader.as_deref() == Some(old_id.as_str());
        if was_leader {
            group.leader = Some(new_id.clone());
        }
        if let Some(instance) = &request.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), new_id.clone());
        }
        let unchanged = old_protocols == member.protocols;
        group.members.insert(new_id.clone(), member);
        tracing::info!(group = %group.id, old = %old_id, new = %new_id, "static member rejoined under a new member id");

        if group.state == GroupState::Stable && unchanged {
            // No rebalance: the member resumes its assignment.
            if let Err(error) = self.persist_group(group) {
                return Reply::Now(JoinResponse::error(error, &new_id));
            }
            let member = &group.members[&new_id];
            let mut response = group.response_for(member, was_leader);
            // The leader already assigned this generation (KIP-814).
            response.skip_assignment = was_leader;
            return Reply::Now(response);
        }
        let (sender, receiver) = oneshot::channel();
        group
            .members
            .get_mut(&new_id)
            .expect("inserted above")
            .join_waiter = Some(sender);
        group.rebalance_or_check(&self.config, now, now_ms, "a static member rejoined");
        Reply::Later(receiver)
    }

    /// Completes the join phase when every member has rejoined (after the
    /// initial delay), or when the rebalance timeout has passed.
    pub(super) fn try_complete_join(&self, group: &mut Group, now: Instant, now_ms: i64) {
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        let timed_out = group.rebalance_deadline.is_some_and(|d| now >= d);
        let all_joined =
            group.pending.is_empty() && group.members.values().all(|m| m.join_waiter.is_some());
        let delayed = group.initial_delay_until.is_some_and(|until| now < until);
        if !(timed_out || (all_joined && !delayed)) {
            return;
        }
        let missing: Vec<String> = group
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for member_id in &missing {
            tracing::info!(group = %group.id, member = %member_id, "removing a member that did not rejoin in time");
            group.remove_member(member_id, ResponseError::UnknownMemberId);
        }
        group.pending.clear();
        group.initial_delay_until = None;
        group.rebalance_deadline = None;
        group.generation += 1;

        if group.members.is_empty() {
            group.protocol = None;
            group.leader = None;
            group.set_state(GroupState::Empty, now_ms);
            if let Err(error) = self.persist_group(group) {
                tracing::warn!(group = %group.id, %error, "could not record the now empty group");
            }
            return;
        }
        group.protocol = group.select_protocol();
        if group
            .leader
            .as_ref()
            .is_none_or(|leader| !group.members.contains_key(leader))
        {
            group.leader = group
                .members
                .values()
                .min_by_key(|m| m.joined_seq)
                .map(|m| m.id.clone());
        }
        group.set_state(GroupState::CompletingRebalance, now_ms);
        group.sync_deadline = Some(now + group.max_rebalance_timeout());
        tracing::info!(group = %group.id, generation = group.generation, members = group.members.len(), protocol = ?group.protocol, leader = ?group.leader, "rebalance: join phase complete");
        let ids: Vec<String> = group.members.keys().cloned().collect();
        for id in ids {
            let is_leader = group.leader.as_deref() == Some(id.as_str());
            let response = group.response_for(&group.members[&id], is_leader);
            let member = group.members.get_mut(&id).expect("listed above");
            member.heartbeat(now);
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(response);
            }
        }
    }

    // ---------------------------------------------------------------- sync

    pub fn sync(&self, request: SyncRequest, now: Instant, now_ms: i64) -> Reply<SyncResponse> {
        let fail = |error| Reply::Now(SyncResponse::error(error));
        let mut groups = self.lock();
        if self.closed.load(Ordering::Relaxed) {
            return fail(ResponseError::NotCoordinator);
        }
        if let Err(error) = self.check_coordinates(&request.group_id) {
            return fail(error);
        }
        let Some(group) = groups.get_mut(&request.group_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        if group.fenced(request.group_instance_id.as_deref(), &request.member_id) {
            return fail(ResponseError::FencedInstanceId);
        }
        if !group.members.contains_key(&request.member_id) {
            return fail(ResponseError::UnknownMemberId);
        }
        if request.generation_id != group.generation {
            return fail(ResponseError::IllegalGeneration);
        }
        if request
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != group.protocol_type.as_ref())
            || request
                .protocol_name
                .as_ref()
                .is_some_and(|p| Some(p) != group.protocol.as_ref())
        {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => fail(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => fail(ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                let member = group.members.get_mut(&request.member_id).expect("checked");
                member.heartbeat(now);
                let response = SyncResponse {
                    error: None,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol.clone(),
                    assignment: member.assignment.clone(),
                };
                Reply::Now(response)
            }
            GroupState::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                let member = group.members.get_mut(&request.member_id).expect("checked");
                member.heartbeat(now);
                member.fail_waiters(ResponseError::RebalanceInProgress);
                member.sync_waiter = Some(sender);
                if group.leader.as_deref() == Some(request.member_id.as_str()) {
                    self.complete_sync(group, request.assignments, now, now_ms);
                }
                Reply::Later(receiver)
            }
        }
    }

    /// The leader's assignment arrived: record it, then answer every member.
    pub(super) fn complete_sync(
        &self,
        group: &mut Group,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
        now_ms: i64,
    ) {
        let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
        for member in group.members.values_mut() {
            member.assignment = assignments.remove(&member.id).unwrap_or_default();
        }
        if let Err(error) = self.persist_group(group) {
            for member in group.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(waiter) = member.sync_waiter.take() {
                    let _ = waiter.send(SyncResponse::error(error));
                }
            }
            group.prepare_rebalance(&self.config, now, now_ms, "recording the assignment failed");
            return;
        }
        group.sync_deadline = None;
        group.set_state(GroupState::Stable, now_ms);
        tracing::info!(group = %group.id, generation = group.generation, "rebalance complete: group stable");
        let protocol_type = group.protocol_type.clone();
        let protocol_name = group.protocol.clone();
        for member in group.members.values_mut() {
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(SyncResponse {
                    error: None,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol_name.clone(),
                    assignment: member.assignment.clone(),
                });
            }
        }
    }

    // ----------------------------------------------------------- heartbeat

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> KafkaResult {
        self.check_coordinates(group_id)?;
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if group.fenced(instance_id, member_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        let state = group.state;
        let generation = group.generation;
        let Some(member) = group.members.get_mut(member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if generation_id != generation {
            return Err(ResponseError::IllegalGeneration);
        }
        member.heartbeat(now);
        match state {
            GroupState::Empty | GroupState::Dead => Err(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    // --------------------------------------------------------------- leave

    /// Returns the top-level error and one error per leaving member.
    pub fn leave(
        &self,
        group_id: &str,
        leaving: &[LeavingMember],
        now: Instant,
        now_ms: i64,
    ) -> (KafkaResult, Vec<KafkaResult>) {
        if let Err(error) = self.check_coordinates(group_id) {
            return (Err(error), Vec::new());
        }
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return (
                Ok(()),
                vec![Err(ResponseError::UnknownMemberId); leaving.len()],
            );
        };
        if group.state == GroupState::Dead {
            return (Err(ResponseError::CoordinatorNotAvailable), Vec::new());
        }
        let mut errors = Vec::with_capacity(leaving.len());
        let mut removed = false;
        for member in leaving {
            let member_id = match member.group_instance_id.as_deref() {
                Some(instance) => match group.static_members.get(instance) {
                    Some(known) if member.member_id.is_empty() || *known == member.member_id => {
                        known.clone()
                    }
                    Some(_) => {
                        errors.push(Err(ResponseError::FencedInstanceId));
                        continue;
                    }
                    None => {
                        errors.push(Err(ResponseError::UnknownMemberId));
                        continue;
                    }
                },
                None => member.member_id.clone(),
            };
            if group.pending.remove(&member_id).is_some() {
                errors.push(Ok(()));
            } else if group.remove_member(&member_id, ResponseError::UnknownMemberId) {
                tracing::info!(group = %group.id, member = %member_id, "member left");
                removed = true;
                errors.push(Ok(()));
            } else {
                errors.push(Err(ResponseError::UnknownMemberId));
            }
        }
        if removed {
            group.rebalance_or_check(&self.config, now, now_ms, "a member left");
        }
        self.try_complete_join(group, now, now_ms);
        (Ok(()), errors)
    }

    // ------------------------------------------------------------- offsets

    /// Expires sessions, pending member ids and rebalance phases. Called
    /// every few tens of milliseconds.
    pub fn tick(&self, now: Instant, now_ms: i64) {
        let mut groups = self.lock();
        for group in groups.values_mut() {
            let before = group.pending.len();
            group.pending.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| m.expired(now))
                .map(|m| m.id.clone())
                .collect();
            for member_id in &expired {
                tracing::info!(group = %group.id, member = %member_id, "member session expired");
                group.remove_member(member_id, ResponseError::UnknownMemberId);
            }
            if !expired.is_empty() {
                group.rebalance_or_check(&self.config, now, now_ms, "a member's session expired");
            }
            if group.state == GroupState::CompletingRebalance
                && group.sync_deadline.is_some_and(|d| now >= d)
            {
                let laggards: Vec<String> = group
                    .members
                    .values()
                    .filter(|m| m.sync_waiter.is_none())
                    .map(|m| m.id.clone())
                    .collect();
                for member_id in &laggards {
                    tracing::info!(group = %group.id, member = %member_id, "member did not sync in time");
                    group.remove_member(member_id, ResponseError::UnknownMemberId);
                }
                group.prepare_rebalance(&self.config, now, now_ms, "members did not sync in time");
            }
            if !expired.is_empty()
                || before != group.pending.len()
                || group.state == GroupState::PreparingRebalance
            {
                self.try_complete_join(group, now, now_ms);
            }
        }
    }
}
