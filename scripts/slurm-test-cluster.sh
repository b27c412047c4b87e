#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for tests/slurm (Debian 12, run as root).
#
#   scripts/slurm-test-cluster.sh up      install (apt) what is missing, write configs, start
#                                         munge, mariadb, slurmdbd, slurmctld, slurmd; wait until
#                                         the node is idle and sacct answers (idempotent)
#   scripts/slurm-test-cluster.sh down    stop the daemons this script starts (by pid file)
#   scripts/slurm-test-cluster.sh status  show which daemons run, sinfo and sacct
#   scripts/slurm-test-cluster.sh mlflow-db-uri
#                                         the PostgreSQL database for an MLflow tracking server
#                                         (scripts/mlflow-server.sh), as an SQLAlchemy URI
#
# Exit status: 0 done, 1 failed, 2 usage, 3 packages cannot be installed.
#
# One node named after `hostname -s` with this machine's CPUs and memory, one partition `debug`
# (default, no time limit), cgroup-free (proctrack/linuxproc, task/none), cons_tres, and
# accounting through slurmdbd + MariaDB: snakemake's SLURM executor reads job states with
# sacct, so without accounting it never sees a job finish. No systemd here: the daemons are
# started directly, pid files under /run, logs under /tmp/slurm-test-cluster/. PostgreSQL (Debian's
# cluster, started with pg_ctlcluster) holds database `mlflow` for the jobs' MLflow tracking
# server: the way a real cluster tracks runs (tests/slurm starts the server on it).
# Knobs (environment): SLURM_TEST_CLUSTER_NAME (default testcluster),
# SLURM_TEST_ACCOUNT (default test), SLURM_TEST_LOG_DIR (default /tmp/slurm-test-cluster),
# SLURM_TEST_TIMEOUT (seconds to wait for each daemon, default 120).
set -euo pipefail

CLUSTER=${SLURM_TEST_CLUSTER_NAME:-testcluster}
ACCOUNT=${SLURM_TEST_ACCOUNT:-test}
LOG_DIR=${SLURM_TEST_LOG_DIR:-/tmp/slurm-test-cluster}
TIMEOUT=${SLURM_TEST_TIMEOUT:-120}
NODE=$(hostname -s)
ETC=/etc/slurm
STATE=/var/lib/slurm
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS_FILE=$ETC/.slurmdbd-db-password   # generated once, root-only
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server postgresql)
MLFLOW_DB=mlflow                            # database and role of the MLflow tracking server
MLFLOW_DB_PASS_FILE=$ETC/.mlflow-db-password

MUNGE_PID=/run/munge/munged.pid
MARIADB_PID=/run/mysqld/mysqld.pid
SLURMDBD_PID=/run/slurmdbd.pid
SLURMCTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid

mkdir -p "$LOG_DIR"
SCRIPT_LOG=$LOG_DIR/script.log
T0=$(date +%s)

say() {  # what the script does: to stdout and the script log
    local line
    line="[slurm-test-cluster +$(($(date +%s) - T0))s] $*"
    echo "$line"
    echo "$(date '+%F %T') $line" >>"$SCRIPT_LOG"
}
die() { say "ERROR: $*"; exit 1; }
# Exit status 3: the packages cannot be installed (no apt-get, no repository, no network);
# tests/slurm skips on it, and fails on any other error.
die_install() { say "ERROR: $*"; exit 3; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, starts daemons)"; }

declare -A COMM=([$MUNGE_PID]=munged [$MARIADB_PID]=mariadbd [$SLURMDBD_PID]=slurmdbd
    [$SLURMCTLD_PID]=slurmctld [$SLURMD_PID]=slurmd)

pid_alive() {  # pid_alive PIDFILE: the pid in it runs, and is the daemon (not a reused pid)
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    [[ -z ${COMM[$1]:-} || $(cat "/proc/$pid/comm" 2>/dev/null) == "${COMM[$1]}" ]]
}

wait_for() {  # wait_for WHAT CMD...: retry CMD for up to $TIMEOUT s
    local what=$1; shift
    local i
    for ((i = 0; i < TIMEOUT * 2; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    die "timed out after ${TIMEOUT}s waiting for $what (logs: $LOG_DIR)"
}

# ---------------------------------------------------------------------------------- install
install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        say "packages already installed: ${PACKAGES[*]}"
        return
    fi
    command -v apt-get >/dev/null || die_install "missing ${missing[*]} and no apt-get to install them"
    say "apt-get installing: ${missing[*]} (log: $LOG_DIR/apt.log)"
    # Keep package scripts from starting services (no init system here; we start them below).
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local rc=0
    {
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"
    } >>"$LOG_DIR/apt.log" 2>&1 || rc=$?
    ((own_policy)) && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || die_install "apt-get failed ($rc); see $LOG_DIR/apt.log"
    say "installed: $(dpkg-query -W -f='${Package} ${Version}\n' "${PACKAGES[@]}" | paste -sd, | sed 's/,/, /g')"
}

# ---------------------------------------------------------------------------------- configs
CHANGED=()   # daemons whose config file changed (restarted if running)

write_if_changed() {  # write_if_changed FILE MODE DAEMON < content
    local file=$1 mode=$2 daemon=$3 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return
    fi
    install -m "$mode" -o root -g root "$tmp" "$file"
    rm -f "$tmp"
    CHANGED+=("$daemon")
    say "wrote $file"
}

node_line() {
    # The hardware as slurmd itself sees it (so the node never drains for a mismatch), memory
    # a bit under the total for the OS and the daemons.
    local hw cpus boards sockets cores threads mem_total real_mem
    hw=$(slurmd -C 2>/dev/null | head -1 || true)
    field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
    cpus=$(field CPUs); boards=$(field Boards); sockets=$(field SocketsPerBoard)
    cores=$(field CoresPerSocket); threads=$(field ThreadsPerCore)
    mem_total=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    real_mem=$((mem_total - (mem_total / 20 > 256 ? mem_total / 20 : 256)))
    if [[ -n $cpus && -n $sockets && -n $cores && -n $threads ]]; then
        echo "NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus Boards=${boards:-1} SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$real_mem State=UNKNOWN"
    else
        echo "NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc --all) RealMemory=$real_mem State=UNKNOWN"
    fi
}

write_configs() {
    mkdir -p "$ETC" "$STATE/slurmctld" "$STATE/slurmd"
    if [[ ! -s $DB_PASS_FILE ]]; then
        (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DB_PASS_FILE")
    fi
    local node
    node=$(node_line)

    write_if_changed "$ETC/slurm.conf" 644 slurmctld <<EOF
# Written by scripts/slurm-test-cluster.sh: a one-node test cluster (not for production).
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
# No cgroups in this container: plain process tracking, no task binding/confinement.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$SLURMCTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Accounting through slurmdbd: sacct is how snakemake's executor sees jobs finish.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# Keep sbatch --comment (snakemake puts rule_<name> there) in the accounting database.
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# One node on localhost; slurmd gets the default 300 s to answer (this machine may be busy).
SlurmctldTimeout=30
SlurmdTimeout=300
InactiveLimit=0
MinJobAge=60
KillWait=10
Waittime=0
$node
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

    write_if_changed "$ETC/slurmdbd.conf" 600 slurmdbd <<EOF
# Written by scripts/slurm-test-cluster.sh.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$SLURMDBD_PID
LogFile=$LOG_DIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$(<"$DB_PASS_FILE")
StorageLoc=$DB_NAME
EOF
    chmod 600 "$ETC/slurmdbd.conf"
}

# ---------------------------------------------------------------------------------- daemons
start_munge() {
    if pid_alive "$MUNGE_PID" && munge -n </dev/null | unmunge >/dev/null 2>&1; then
        say "munged already running (pid $(<"$MUNGE_PID"))"
        return
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
    rm -f "$MUNGE_PID" /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    # munged insists that its log file belongs to it and is not world-writable.
    touch "$LOG_DIR/munged.log"
    chown munge:munge "$LOG_DIR/munged.log" && chmod 640 "$LOG_DIR/munged.log"
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID" --log-file="$LOG_DIR/munged.log" \
        >>"$SCRIPT_LOG" 2>&1 || die "munged did not start; see $LOG_DIR/munged.log and $SCRIPT_LOG"
    wait_for "munge" bash -c 'munge -n </dev/null | unmunge'
    say "started munged (pid $(<"$MUNGE_PID"))"
}

mariadb_ping() { mariadb-admin --protocol=socket -uroot ping; }

start_mariadb() {
    if pid_alive "$MARIADB_PID" && mariadb_ping >/dev/null 2>&1; then
        say "mariadb already running (pid $(<"$MARIADB_PID"))"
    else
        install -d -o mysql -g mysql -m 755 /run/mysqld
        if [[ ! -d /var/lib/mysql/mysql ]]; then
            say "initialising /var/lib/mysql"
            mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$LOG_DIR/mariadb.log" 2>&1
        fi
        local safe
        safe=$(command -v mariadbd-safe || command -v mysqld_safe)
        # mariadbd writes its error log as the mysql user.
        touch "$LOG_DIR/mariadb.log" && chown mysql:mysql "$LOG_DIR/mariadb.log"
        setsid "$safe" --user=mysql --pid-file="$MARIADB_PID" --log-error="$LOG_DIR/mariadb.log" \
            </dev/null >>"$SCRIPT_LOG" 2>&1 &
        wait_for "mariadb" mariadb_ping
        say "started mariadb (pid $(<"$MARIADB_PID"))"
    fi
    # The accounting database and its user (idempotent).
    mariadb --protocol=socket -uroot <<EOF
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$(<"$DB_PASS_FILE")';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$(<"$DB_PASS_FILE")';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
}

pg_cluster() {  # "VERSION NAME PORT STATUS" of the first PostgreSQL cluster, created if there is none
    if [[ -z $(pg_lsclusters -h 2>/dev/null) ]]; then
        local version
        version=$(ls /usr/lib/postgresql | sort -V | tail -1)
        say "creating PostgreSQL cluster $version/main" >&2   # stdout is this function's answer
        pg_createcluster "$version" main >>"$LOG_DIR/postgresql.log" 2>&1
    fi
    pg_lsclusters -h | head -1 | awk '{print $1, $2, $3, $4}'
}

start_postgres() {
    local version name port status
    read -r version name port status < <(pg_cluster)
    if [[ $status == online ]]; then
        say "postgresql $version/$name already running (port $port)"
    else
        pg_ctlcluster "$version" "$name" start >>"$LOG_DIR/postgresql.log" 2>&1 \
            || die "postgresql $version/$name did not start; see $LOG_DIR/postgresql.log and /var/log/postgresql/"
        wait_for "postgresql" runuser -u postgres -- pg_isready -q -p "$port"
        say "started postgresql $version/$name (port $port)"
    fi
    [[ -s $MLFLOW_DB_PASS_FILE ]] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$MLFLOW_DB_PASS_FILE")
    # The tracking server's role and database (idempotent).
    runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -p "$port" >>"$SCRIPT_LOG" 2>&1 <<EOF || die "creating database $MLFLOW_DB failed; see $SCRIPT_LOG"
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$MLFLOW_DB') THEN CREATE ROLE $MLFLOW_DB LOGIN; END IF;
END \$\$;
ALTER ROLE $MLFLOW_DB PASSWORD '$(<"$MLFLOW_DB_PASS_FILE")';
SELECT 'CREATE DATABASE $MLFLOW_DB OWNER $MLFLOW_DB' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$MLFLOW_DB')\gexec
EOF
}

cmd_mlflow_db_uri() {
    need_root
    local version name port status
    read -r version name port status < <(pg_cluster)
    [[ $status == online && -s $MLFLOW_DB_PASS_FILE ]] || die "postgresql is not up: run '$0 up' first"
    echo "postgresql+psycopg://$MLFLOW_DB:$(<"$MLFLOW_DB_PASS_FILE")@127.0.0.1:$port/$MLFLOW_DB"
}

changed() { local d; for d in "${CHANGED[@]}"; do [[ $d == "$1" ]] && return 0; done; return 1; }

stop_pidfile() {  # stop_pidfile NAME PIDFILE: TERM the pid in it, wait, KILL if it lingers
    local name=$1 file=$2 pid i
    if ! pid_alive "$file"; then
        rm -f "$file"
        return
    fi
    pid=$(<"$file")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        say "killed $name (pid $pid) after 30 s"
    else
        say "stopped $name (pid $pid)"
    fi
    rm -f "$file"
}

start_slurmdbd() {
    if pid_alive "$SLURMDBD_PID" && ! changed slurmdbd; then
        say "slurmdbd already running (pid $(<"$SLURMDBD_PID"))"
    else
        stop_pidfile slurmdbd "$SLURMDBD_PID"
        /usr/sbin/slurmdbd >>"$LOG_DIR/slurmdbd.log" 2>&1
        wait_for "slurmdbd (sacctmgr)" sacctmgr -n show cluster
        say "started slurmdbd (pid $(<"$SLURMDBD_PID"))"
    fi
    wait_for "slurmdbd (sacctmgr)" sacctmgr -n show cluster
    # Register the cluster, an account, and the users (root and whoever ran sudo).
    if [[ -z $(sacctmgr -n -P show cluster "$CLUSTER" format=cluster) ]]; then
        sacctmgr -i add cluster "$CLUSTER" >>"$SCRIPT_LOG" 2>&1
        say "sacctmgr: added cluster $CLUSTER"
    fi
    if [[ -z $(sacctmgr -n -P show account "$ACCOUNT" format=account) ]]; then
        sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="test jobs" \
            organization=test >>"$SCRIPT_LOG" 2>&1
        say "sacctmgr: added account $ACCOUNT"
    fi
    local user
    for user in root ${SUDO_USER:-}; do
        if [[ -z $(sacctmgr -n -P show assoc cluster="$CLUSTER" account="$ACCOUNT" user="$user" format=user) ]]; then
            sacctmgr -i add user "$user" account="$ACCOUNT" cluster="$CLUSTER" >>"$SCRIPT_LOG" 2>&1
            say "sacctmgr: added user $user to account $ACCOUNT"
        fi
    done
}

start_slurmctld() {
    if pid_alive "$SLURMCTLD_PID" && ! changed slurmctld; then
        say "slurmctld already running (pid $(<"$SLURMCTLD_PID"))"
        return
    fi
    stop_pidfile slurmctld "$SLURMCTLD_PID"
    /usr/sbin/slurmctld >>"$LOG_DIR/slurmctld.log" 2>&1
    wait_for "slurmctld (scontrol ping)" bash -c 'scontrol ping | grep -q UP'
    say "started slurmctld (pid $(<"$SLURMCTLD_PID"))"
}

start_slurmd() {
    if pid_alive "$SLURMD_PID" && ! changed slurmctld; then
        say "slurmd already running (pid $(<"$SLURMD_PID"))"
        return
    fi
    stop_pidfile slurmd "$SLURMD_PID"
    /usr/sbin/slurmd >>"$LOG_DIR/slurmd.log" 2>&1
    wait_for "slurmd" pid_alive "$SLURMD_PID"
    say "started slurmd (pid $(<"$SLURMD_PID"))"
}

node_state() { sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -1; }

wait_node_idle() {
    local i state
    for ((i = 0; i < TIMEOUT * 2; i++)); do
        state=$(node_state)
        case $state in
            idle | mixed | allocated) say "node $NODE is $state"; return ;;
            down* | drain* | fail*)
                # e.g. left down by an earlier run of slurmd: return it to service once.
                if ((i % 20 == 0)); then
                    say "node $NODE is $state ($(scontrol show node "$NODE" | sed -n 's/.*Reason=//p')); resuming"
                    scontrol update nodename="$NODE" state=resume >>"$SCRIPT_LOG" 2>&1 || true
                fi ;;
        esac
        sleep 0.5
    done
    scontrol show node "$NODE" >>"$SCRIPT_LOG" 2>&1 || true
    die "node $NODE not idle after ${TIMEOUT}s (state: ${state:-unknown}); see $LOG_DIR"
}

cmd_up() {
    need_root
    say "up: one-node cluster '$CLUSTER', node $NODE, logs in $LOG_DIR"
    install_packages
    write_configs
    start_munge
    start_mariadb
    start_postgres
    start_slurmdbd
    start_slurmctld
    start_slurmd
    wait_node_idle
    wait_for "sacct" sacct -n -X -S now-1minutes
    sinfo
    say "up: done in $(($(date +%s) - T0)) s"
}

cmd_down() {
    need_root
    say "down"
    stop_pidfile slurmd "$SLURMD_PID"
    stop_pidfile slurmctld "$SLURMCTLD_PID"
    stop_pidfile slurmdbd "$SLURMDBD_PID"
    if pid_alive "$MARIADB_PID"; then
        # mariadbd-safe exits (without restarting it) when mariadbd shuts down cleanly.
        mariadb-admin --protocol=socket -uroot shutdown >>"$SCRIPT_LOG" 2>&1 || stop_pidfile mariadb "$MARIADB_PID"
        say "stopped mariadb"
    fi
    stop_pidfile munged "$MUNGE_PID"
    local version name port status
    read -r version name port status < <(pg_lsclusters -h 2>/dev/null | head -1 | awk '{print $1, $2, $3, $4}') || true
    if [[ ${status:-} == online ]]; then
        pg_ctlcluster "$version" "$name" stop >>"$LOG_DIR/postgresql.log" 2>&1 && say "stopped postgresql $version/$name"
    fi
    say "down: done"
}

cmd_status() {
    local name file rc=0
    for name in munged:$MUNGE_PID mariadb:$MARIADB_PID slurmdbd:$SLURMDBD_PID \
        slurmctld:$SLURMCTLD_PID slurmd:$SLURMD_PID; do
        file=${name#*:}
        if pid_alive "$file"; then
            echo "${name%%:*}: running (pid $(<"$file"))"
        else
            echo "${name%%:*}: not running"
            rc=1
        fi
    done
    echo "postgresql: $(pg_lsclusters -h 2>/dev/null | head -1 | awk '{print $1 "/" $2 " port " $3 ": " $4}')"
    if command -v sinfo >/dev/null; then
        sinfo 2>&1 || rc=1
        sacct -X -S now-1hours -o JobID,JobName%20,Comment%30,State,Elapsed 2>&1 | tail -20 || rc=1
    fi
    return $rc
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    mlflow-db-uri) cmd_mlflow_db_uri ;;
    *) echo "usage: $0 up|down|status|mlflow-db-uri" >&2; exit 2 ;;
esac
