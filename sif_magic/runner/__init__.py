"""What runs calls: shared by the RabbitMQ worker and the local backend.

Standard library and cloudpickle only (it runs inside slim worker images).
"""
