output "namespace" {
  value = module.namespace.namespace
}
