// The runtime combines metrics and the host's hooks with the flush loop's own isolation rule.
export { combineHooks as combineObservers } from '@usagekit/boundary-usage';
