"""The pipeline on an embedded emulated AWS: moto plus an emulated Custom Labels model, a
discrete-event clock and an emulation of Lambda's SQS event-source mapping."""
