#!/usr/bin/env bash

#SBATCH -J hpc-bigmem-00000000
#SBATCH -e /home/user/rask-logs/hpc-bigmem-00000000-%J.err
#SBATCH -o /home/user/rask-logs/hpc-bigmem-00000000-%J.out
#SBATCH -p bigmem
#SBATCH -A myproject
#SBATCH -n 1
#SBATCH -N 1
#SBATCH --cpus-per-task=8
#SBATCH --mem=239G
#SBATCH -t 02:00:00
#SBATCH --comment=rask:cluster=hpc,role=worker,group=bigmem
#SBATCH --constraint=skylake

module load rask
export RAYON_NUM_THREADS=4
export DASK_CLUSTER_NAME=hpc
export DASK_SCHEDULER_ADDRESS=tls://login1:8786
trap 'kill $(jobs -p) 2>/dev/null' TERM INT
/opt/rask/bin/rask worker "$DASK_SCHEDULER_ADDRESS" --name hpc-bigmem-00000000-0 --nthreads 4 --memory-limit 128000000000 --local-directory "$TMPDIR" --tls-ca-file STATE/hpc-tls/ca.pem --tls-cert STATE/hpc-tls/worker.pem --tls-key STATE/hpc-tls/worker-key.pem &
/opt/rask/bin/rask worker "$DASK_SCHEDULER_ADDRESS" --name hpc-bigmem-00000000-1 --nthreads 4 --memory-limit 128000000000 --local-directory "$TMPDIR" --tls-ca-file STATE/hpc-tls/ca.pem --tls-cert STATE/hpc-tls/worker.pem --tls-key STATE/hpc-tls/worker-key.pem &
wait
