"""CDK constructs and the stack of the Custom Labels batch pipeline."""
