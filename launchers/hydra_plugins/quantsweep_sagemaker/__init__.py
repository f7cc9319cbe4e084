"""quantsweep's SageMaker launcher for Hydra: every job of a sweep as a SageMaker training job."""
