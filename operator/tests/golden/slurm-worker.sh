#!/usr/bin/env bash

#SBATCH -J cluster-default-00000000
#SBATCH -e /home/user/rask-logs/cluster-default-00000000-%J.err
#SBATCH -o /home/user/rask-logs/cluster-default-00000000-%J.out
#SBATCH -p normal
#SBATCH -A myproject
#SBATCH -n 1
#SBATCH -N 1
#SBATCH --cpus-per-task=8
#SBATCH --mem=30G
#SBATCH -t 02:00:00
#SBATCH --comment=rask:cluster=hpc,role=worker,group=default
#SBATCH --constraint=skylake

module load rask
export RAYON_NUM_THREADS=4
export DASK_CLUSTER_NAME=hpc
export DASK_SCHEDULER_ADDRESS=tls://login1:8786
export OMP_NUM_THREADS=1
trap 'kill $(jobs -p) 2>/dev/null' TERM INT
/opt/rask/bin/rask worker "$DASK_SCHEDULER_ADDRESS" --name cluster-default-00000000-0 --nthreads 4 --memory-limit 16000000000 --local-directory "$TMPDIR" --tls-ca-file STATE/hpc-tls/ca.pem --tls-cert STATE/hpc-tls/worker.pem --tls-key STATE/hpc-tls/worker-key.pem &
/opt/rask/bin/rask worker "$DASK_SCHEDULER_ADDRESS" --name cluster-default-00000000-1 --nthreads 4 --memory-limit 16000000000 --local-directory "$TMPDIR" --tls-ca-file STATE/hpc-tls/ca.pem --tls-cert STATE/hpc-tls/worker.pem --tls-key STATE/hpc-tls/worker-key.pem &
wait
