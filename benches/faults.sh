#!/usr/bin/env bash
# The fault suite in one command: every fault scenario of the test suite, run one at a time
# with its own output shown (each prints what happened to every class of request), then a
# summary line per scenario. Loopback only; each scenario is bounded in count and time (the
# whole suite takes a few minutes). These scenarios also run in CI as ordinary tests.
#
#   benches/faults.sh            # all scenarios
#   benches/faults.sh provider   # only those whose name contains "provider"
#
# Needs what the tests need (./tests/run.sh installs it): redis-server, node + tests/idp,
# prlimit, faketime. The 30-minute soak is separate: `cargo bench --bench soak`.
set -uo pipefail
cd "$(dirname "$0")/.."
export CI="${CI:-true}"

# test binary | test name (empty: every test of the binary) | what it does to the gateway
SCENARIOS=(
  "redis_faults|first_request_after_a_redis_restart_is_served|Redis restarted; the first request after it"
  "redis_faults|redis_closing_idle_connections_fails_no_request|Redis closes idle connections (timeout 1)"
  "redis_faults|readiness_does_not_flap_on_a_dropped_connection|one dropped Redis connection vs /readyz"
  "replicas|redis_restart_with_aof_loses_no_session|Redis SIGKILL + restart with AOF"
  "replicas|sentinel_failover_under_load_logs_nobody_out|Sentinel failover under load"
  "fault_scenarios|redis_cluster_primary_failover_loses_no_logout_and_mixes_no_identity|Redis Cluster primary SIGKILL with logins, reads and logouts in the window"
  "fault_scenarios|a_replica_with_a_skewed_clock_neither_extends_nor_cuts_sessions|one replica's clock at +5 min and one at -5 min (faketime)"
  "fault_scenarios|a_skewed_replica_records_token_expiry_on_the_stores_clock|access-token expiry written by a +5 min replica, read by a true-time one"
  "redis_faults|sentinel_failover_loses_no_logout|Sentinel failover with logouts in the window"
  "replicas|provider_down_at_refresh_serves_until_expiry_then_503|provider down at token refresh"
  "login|redis_sessions_fail_closed_and_recover|Redis down and frozen"
  "provider_faults|provider_killed_and_restarted_is_noticed_served_around_and_recovered|provider killed and restarted (x3)"
  "provider_faults|frozen_provider_is_noticed_through_timeouts|provider frozen (SIGSTOP)"
  "provider_faults|cold_start_with_the_provider_down_answers_503_to_valid_bearer_tokens|cold start with JWKS failing, then rotated keys"
  "provider_faults|one_provider_of_two_down|one provider of two down"
  "provider_faults|introspection_outage_is_503_and_logged_once|introspection endpoint down"
  "provider_faults|store_outage_503s_say_when_to_retry_and_log_once|store outage: Retry-After and log rate"
  "connections|ten_thousand_idle_connections_stay_under_the_memory_bound_and_a_client_is_served|10 000 idle connections"
  "connections|the_shipped_sidecar_limits_survive_the_flood_within_the_container_memory_limit|idle flood vs the shipped sidecar limits"
  "connections|a_slow_loris_on_the_second_request_is_closed_within_the_head_timeout|slow-loris on a keep-alive connection"
  "connections|beyond_the_limit_idle_connections_make_room_and_busy_ones_are_never_cut|connection limit reached"
  "shutdown||SIGTERM and upgrade under steady load"
  "fault_scenarios|twenty_sighups_under_load_fail_no_request|20 SIGHUPs (config reloads) under steady load"
  "pending_logins||anonymous login floods (memory, Redis, Cluster)"
  "gateway|proxying::upstream_down_is_502_and_slow_is_504|upstream down and slow (502/504)"
  "fault_scenarios|upstreams_that_reset_are_502_and_harm_nothing_else|upstream closing or resetting connections"
)

filter="${1:-}"
results=()
failed=0
for s in "${SCENARIOS[@]}"; do
  IFS='|' read -r bin name what <<<"$s"
  [[ -n "$filter" && "$bin $name $what" != *"$filter"* ]] && continue
  echo
  echo "=== $what ($bin${name:+ $name})"
  start=$(date +%s)
  if cargo test --quiet --test "$bin" -- --nocapture --test-threads=1 ${name:+"$name"}; then
    results+=("ok    $(($(date +%s) - start))s  $what")
  else
    results+=("FAIL  $(($(date +%s) - start))s  $what")
    failed=1
  fi
done
echo
echo "=== summary"
printf '%s\n' "${results[@]}"
exit $failed
