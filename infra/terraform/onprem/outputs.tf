output "namespace" {
  value = module.onprem.namespace
}
