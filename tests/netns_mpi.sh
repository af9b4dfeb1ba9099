#!/usr/bin/env bash
# Two "hosts" on one machine: network namespaces nodea and nodeb joined by a veth pair
# (10.77.0.1/24 <-> 10.77.0.2/24, addresses that exist only inside these namespaces), each
# with its own host name (a UTS namespace). mpirun runs in nodea and starts the remote
# orted in nodeb through a launch agent that stands in for ssh; Open MPI talks TCP only
# (btl self,tcp; oob tcp), restricted to the veth subnet. One rank per "host".
#
#   tests/netns_mpi.sh MEDSLIP_BIN -- ARGS...     runs `MEDSLIP_BIN ARGS...` on 2 ranks
#
# Exit 77 (and a line "skip: <reason>") where namespaces cannot be made (not root, no
# CAP_NET_ADMIN, no iproute2/unshare/mpirun). Cleans up its namespaces on every exit.
set -uo pipefail
bin=${1:?usage: tests/netns_mpi.sh MEDSLIP_BIN -- ARGS...}
shift
[ "${1:-}" = "--" ] && shift
skip() { echo "skip: $*"; exit 77; }
command -v ip >/dev/null || skip "no iproute2 (ip)"
command -v unshare >/dev/null || skip "no unshare (util-linux)"
command -v mpirun >/dev/null || skip "no mpirun (Open MPI)"
[ "$(id -u)" = 0 ] || skip "network namespaces need root"
tag=$$
na=msa$tag nb=msb$tag va=mva$tag vb=mvb$tag
tmp=$(mktemp -d)
cleanup() { ip netns del "$na" 2>/dev/null; ip netns del "$nb" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
ip netns add "$na" 2>/dev/null || skip "cannot create a network namespace (ip netns add: no CAP_NET_ADMIN?)"
ip netns add "$nb" || skip "cannot create a second network namespace"
ip link add "$va" type veth peer name "$vb" || skip "cannot create a veth pair"
ip link set "$va" netns "$na" && ip link set "$vb" netns "$nb" || skip "cannot move the veth ends"
ip -n "$na" addr add 10.77.0.1/24 dev "$va"
ip -n "$nb" addr add 10.77.0.2/24 dev "$vb"
for n in "$na" "$nb"; do ip -n "$n" link set lo up; done
ip -n "$na" link set "$va" up
ip -n "$nb" link set "$vb" up
# The launch agent: `agent HOST COMMAND...` runs COMMAND in nodeb's namespaces, as ssh would
# on the other host.
cat > "$tmp/agent" <<AGENT
#!/bin/sh
shift
exec ip netns exec $nb unshare --uts /bin/sh -c "hostname nodeb; \$*"
AGENT
chmod +x "$tmp/agent"
printf '10.77.0.1 slots=1\n10.77.0.2 slots=1\n' > "$tmp/hosts"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Sanitizer builds: no LeakSanitizer in the ranks (Open MPI plugins leak at exit; see
# tests/train/distributed.cpp). Ignored by a plain build.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
args=$(printf ' %q' "$@")
ip netns exec "$na" unshare --uts /bin/sh -c "hostname nodea; exec mpirun --hostfile $tmp/hosts -np 2 --map-by node \
  --mca plm_rsh_agent $tmp/agent --mca btl self,tcp --mca btl_tcp_if_include 10.77.0.0/24 \
  --mca oob_tcp_if_include 10.77.0.0/24 --bind-to none $(printf %q "$bin")$args"
exit $?   # (not exec: the trap removes the namespaces)
