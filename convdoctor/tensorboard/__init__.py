"""convdoctor's TensorBoard tab: the plugin and the server command."""
