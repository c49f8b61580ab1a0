#!/usr/bin/env bash

#$ -N cluster-default-00000000
#$ -q all.q
#$ -P myproject
#$ -l h_vmem=8G
#$ -l h_rt=04:00:00
#$ -e /home/user/rask-logs/
#$ -o /home/user/rask-logs/
#$ -cwd
#$ -j y
#$ -ac rask_cluster=grid,rask_role=worker,rask_group=default
#$ -pe smp 4

source /etc/profile.d/modules.sh
module load rask
export DASK_CLUSTER_NAME=grid
export DASK_SCHEDULER_ADDRESS=tls://login1:8786
exec /opt/rask/bin/rask worker "$DASK_SCHEDULER_ADDRESS" --name cluster-default-00000000 --nthreads 4 --memory-limit 8589934592 --tls-ca-file STATE/grid-tls/ca.pem --tls-cert STATE/grid-tls/worker.pem --tls-key STATE/grid-tls/worker-key.pem
