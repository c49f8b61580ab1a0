#!/usr/bin/env bash

#SBATCH -J hpc-scheduler
#SBATCH -e /home/user/rask-logs/hpc-scheduler-%J.err
#SBATCH -o /home/user/rask-logs/hpc-scheduler-%J.out
#SBATCH -p normal
#SBATCH -A myproject
#SBATCH -n 1
#SBATCH -N 1
#SBATCH --cpus-per-task=1
#SBATCH -t 02:00:00
#SBATCH --comment=rask:cluster=hpc,role=scheduler

module load rask
export RAYON_NUM_THREADS=4
export DASK_CLUSTER_NAME=hpc
export DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES='['\''distributed.http.scheduler.api'\'','\''distributed.http.health'\'','\''distributed.http.scheduler.prometheus'\'']'
exec /opt/rask/bin/rask scheduler --host 0.0.0.0 --port 8786 --dashboard-address :8787 --scheduler-file STATE/hpc.scheduler.json --tls-ca-file STATE/hpc-tls/ca.pem --tls-cert STATE/hpc-tls/scheduler.pem --tls-key STATE/hpc-tls/scheduler-key.pem
