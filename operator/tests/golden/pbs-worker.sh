#!/usr/bin/env bash

#PBS -N cluster-default-00000000
#PBS -q workq
#PBS -A myproject
#PBS -l select=1:ncpus=24:mem=94GB
#PBS -l walltime=01:00:00
#PBS -o /home/user/rask-logs/
#PBS -m n

export DASK_CLUSTER_NAME=pbs
export DASK_SCHEDULER_ADDRESS=tls://login1:8786
RASK_HOST=$(ip -o -4 addr show dev ib0 | awk '{print $4}' | cut -d/ -f1 | head -n 1)
[ -n "$RASK_HOST" ] || { echo "no IPv4 address on interface ib0" >&2; exit 1; }
trap 'kill $(jobs -p) 2>/dev/null' TERM INT
/opt/rask/bin/rask worker "$DASK_SCHEDULER_ADDRESS" --name cluster-default-00000000-0 --nthreads 4 --memory-limit 16666666666 --listen-host "$RASK_HOST" --contact-host "$RASK_HOST" --tls-ca-file STATE/pbs-tls/ca.pem --tls-cert STATE/pbs-tls/worker.pem --tls-key STATE/pbs-tls/worker-key.pem &
/opt/rask/bin/rask worker "$DASK_SCHEDULER_ADDRESS" --name cluster-default-00000000-1 --nthreads 4 --memory-limit 16666666666 --listen-host "$RASK_HOST" --contact-host "$RASK_HOST" --tls-ca-file STATE/pbs-tls/ca.pem --tls-cert STATE/pbs-tls/worker.pem --tls-key STATE/pbs-tls/worker-key.pem &
/opt/rask/bin/rask worker "$DASK_SCHEDULER_ADDRESS" --name cluster-default-00000000-2 --nthreads 4 --memory-limit 16666666666 --listen-host "$RASK_HOST" --contact-host "$RASK_HOST" --tls-ca-file STATE/pbs-tls/ca.pem --tls-cert STATE/pbs-tls/worker.pem --tls-key STATE/pbs-tls/worker-key.pem &
/opt/rask/bin/rask worker "$DASK_SCHEDULER_ADDRESS" --name cluster-default-00000000-3 --nthreads 4 --memory-limit 16666666666 --listen-host "$RASK_HOST" --contact-host "$RASK_HOST" --tls-ca-file STATE/pbs-tls/ca.pem --tls-cert STATE/pbs-tls/worker.pem --tls-key STATE/pbs-tls/worker-key.pem &
/opt/rask/bin/rask worker "$DASK_SCHEDULER_ADDRESS" --name cluster-default-00000000-4 --nthreads 4 --memory-limit 16666666666 --listen-host "$RASK_HOST" --contact-host "$RASK_HOST" --tls-ca-file STATE/pbs-tls/ca.pem --tls-cert STATE/pbs-tls/worker.pem --tls-key STATE/pbs-tls/worker-key.pem &
/opt/rask/bin/rask worker "$DASK_SCHEDULER_ADDRESS" --name cluster-default-00000000-5 --nthreads 4 --memory-limit 16666666666 --listen-host "$RASK_HOST" --contact-host "$RASK_HOST" --tls-ca-file STATE/pbs-tls/ca.pem --tls-cert STATE/pbs-tls/worker.pem --tls-key STATE/pbs-tls/worker-key.pem &
wait
