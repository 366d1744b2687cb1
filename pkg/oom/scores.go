package oom

// SetScores changes the partition and nested scores of the policy between
// audits (an operator's SetOOMScoreAdjust); nested is raised to partition
// when below it. It validates like Policy.Validate.
func (a *Auditor) SetScores(partition, nested int) error {
	if err := ValidateScore(partition); err != nil {
		return err
	}
	nested = max(nested, partition)
	if err := ValidateScore(nested); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.Policy.PartitionScore, a.Policy.NestedScore = partition, nested
	return nil
}
