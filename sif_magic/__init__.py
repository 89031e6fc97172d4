"""sif_magic: map notebook functions over Singularity/Apptainer workers via RabbitMQ."""
